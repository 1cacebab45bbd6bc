"""Redis Sentinel failovers under load, with real processes: a master, a replica and three
sentinels (tests/services.py SentinelSet), two `rankpulse serve` instances on the
`redis+sentinel://` URL sharing one SQLite file, results POSTed throughout, and clients on SSE,
WebSocket and long-poll following `leaderboard:global` and `matches` (tests/fault_traffic.py).

What must hold (issue 11): no 5xx but 503 with Retry-After; every 2xx result in SQL exactly
once; both boards equal to SQL within 10 s; events flowing again within the failover time;
every client gapless (each event once, in the log's order) or told `stream:reset` - never a
sequence number of the old master handed out again (a client holding it would skip the event
that reuses it: a silent gap)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator

import pytest

from .fault_checks import Differs, assert_nothing_lost, results_grow
from .fault_traffic import Traffic
from .helpers import eventually
from .services import LiveServer, SentinelSet

SECRET = "fault-suite-secret-0123456789-abcdef"
# down-after 1 s, the vote, the promotion and the outbox's next pass take about 3 s; the rest
# is room for a loaded 2-core machine
RESUME_SECONDS = 15.0

pytestmark = pytest.mark.slow


@pytest.fixture(name="sentinels")
def _sentinels() -> Iterator[SentinelSet]:
    sentinels = SentinelSet()
    sentinels.start()
    yield sentinels
    sentinels.stop()


def instances(live_servers: Callable[..., LiveServer], redis_url: str) -> list[LiveServer]:
    env = {"REDIS_URL": redis_url, "JWT_SECRET": SECRET, "LOG_LEVEL": "info"}
    return [live_servers(env=env) for _ in range(2)]


def log_position(sentinels: SentinelSet, port: int) -> tuple[str, int]:
    """(epoch, last seq) of the event log on the Redis at `port`."""
    epoch, seq = sentinels.cli(port, "HMGET", "lrp:meta", "epoch", "seq").split("\n")
    return epoch, int(seq or 0)


def reference_past(traffic: Traffic, epoch: str, seq: int) -> bool:
    """The reference reader (so the clients too) got an event of `epoch` after `seq`."""
    return any(
        cursor.rpartition(".")[0] == epoch and int(cursor.rpartition(".")[2]) > seq
        for cursor in traffic.reference.ordinal
    )


def reference_epochs(traffic: Traffic) -> set[str]:
    return {cursor.rpartition(".")[0] for cursor in traffic.reference.ordinal}


async def events_resume(traffic: Traffic, killed: float, more: int = 5) -> float:
    """Seconds from the kill until `more` new events reached the reference reader."""
    target = len(traffic.reference) + more

    async def flowing() -> bool:
        return len(traffic.reference) >= target

    await eventually(flowing, RESUME_SECONDS + 15, "events flowing after the failover", 0.05)
    return time.monotonic() - killed


async def assert_every_result_announced(traffic: Traffic) -> None:
    """Every 2xx result's match:result reached the reader, unless the reader was told
    stream:reset (then it may jump: PROTOCOL 2). Events handed out under seqs the clients
    already held are skipped by every instance and every client alike: only this finds them."""
    if traffic.reference.resets:
        return

    async def none_missing() -> bool | Differs:
        announced = {m for e, m in traffic.reference.events if e == "match:result"}
        missing = sorted({m for m, _ in traffic.written.results_ok} - announced)
        return Differs(f"{len(missing)} never announced: {missing[:5]}") if missing else True

    await eventually(none_missing, 10, "every 2xx result announced to the clients")


async def assert_clients_caught_up_with_no_seq_reused(traffic: Traffic) -> None:
    """After the writes stopped: every client reaches the end of the log, and none got an
    event at a cursor where the log has another one, nor did the reader see a cursor twice:
    what a sequence number handed out again looks like. (Checked for every client, those told
    stream:reset included: a reset allows a jump, not a different event at a known cursor.)
    A client told stream:reset may hold new-epoch events the reader skipped with its own
    reset (PROTOCOL 2): those stay unchecked."""

    async def caught_up() -> bool:
        traffic.settle_checks()
        return all(
            w.check.expected >= len(traffic.reference)
            and (not w.check.pending or bool(traffic.reference.resets))
            for w in traffic.watchers
        )

    await eventually(caught_up, 30, "every client at the end of the log", interval=0.2)
    assert traffic.reference.duplicates == 0
    # a stream or poll refused during the failover: 503 only (the writer's are checked apart)
    refused = {f for w in traffic.watchers for f in w.check.failures if re.search(r"\b5\d\d", f)}
    assert all(f.endswith(" 503") for f in refused), refused
    for watcher in traffic.watchers:
        check = watcher.check
        assert check.mismatched == 0 and check.duplicates == 0, (check.name, check.summary())


async def test_a_failover_to_a_stale_replica_resets_clients_instead_of_a_silent_gap(
    sentinels: SentinelSet, live_servers: Callable[..., LiveServer]
) -> None:
    """The replica stops following, results go on to the master only (clients get their
    events), the master is killed and the sentinels promote the stale replica: its log is
    behind seqs the clients hold, so the service starts a new epoch and every client is told
    stream:reset; nothing 2xx is lost from SQL or the boards."""
    servers = instances(live_servers, sentinels.url)
    database_url = servers[0].env["DATABASE_URL"]
    master = sentinels.master.port
    async with Traffic(servers) as traffic:
        await results_grow(traffic, 10, 30, "results before the cut")
        await asyncio.to_thread(sentinels.cut_replication)
        replica_epoch, replica_seq = log_position(sentinels, sentinels.replica_port)
        await results_grow(traffic, 10, 30, "results that only the master gets")

        async def clients_ahead_of_the_replica() -> bool:
            return reference_past(traffic, replica_epoch, replica_seq)

        await eventually(clients_ahead_of_the_replica, 10, "clients holding events it lacks")
        master_epoch, master_seq = log_position(sentinels, master)
        assert replica_epoch == master_epoch
        assert master_seq > replica_seq, "the replica must be behind for this test"

        sentinels.kill_master()
        killed = time.monotonic()
        promoted = await asyncio.to_thread(sentinels.wait_for_new_master, master, 30)
        assert promoted == sentinels.replica_port
        resumed = await events_resume(traffic, killed)
        await results_grow(traffic, 10, 30, "results after the failover")
        traffic.stop_writing()
        await assert_clients_caught_up_with_no_seq_reused(traffic)
        facts = await assert_nothing_lost(traffic, servers, database_url, resets_allowed=True)

        await assert_every_result_announced(traffic)
    # every client held a position of the old epoch: each one is told to start over
    told = {w.check.name: w.check.resets for w in traffic.watchers}
    assert all(resets.get("unknown") for resets in told.values()), told
    assert resumed < RESUME_SECONDS, f"events flowed again only {resumed:.1f}s after the kill"
    new_epoch, _ = log_position(sentinels, promoted)
    assert new_epoch != master_epoch, "the stale log went on in the old epoch"
    assert new_epoch in reference_epochs(traffic)
    print(
        f"stale promotion: replica at {replica_seq}, master at {master_seq} of {master_epoch}; "
        f"events again {resumed:.1f}s after the kill, in epoch {new_epoch}; {facts}"
    )


async def test_a_master_killed_under_load_fails_over_and_loses_nothing(
    sentinels: SentinelSet, live_servers: Callable[..., LiveServer]
) -> None:
    """kill -9 of the master (the replica in sync) under load: results are still accepted
    (SQL is the truth, the outbox publishes once a master is back), events flow again within
    the failover time, and every client is gapless or told stream:reset (the replica may miss
    the last writes: asynchronous replication)."""
    servers = instances(live_servers, sentinels.url)
    database_url = servers[0].env["DATABASE_URL"]
    master = sentinels.master.port
    async with Traffic(servers) as traffic:
        await results_grow(traffic, 15, 30, "results before the crash")
        before = len(traffic.written.results_ok)
        sentinels.kill_master()
        killed = time.monotonic()
        await asyncio.to_thread(sentinels.wait_for_new_master, master, 30)
        resumed = await events_resume(traffic, killed)
        during = len(traffic.written.results_ok) - before
        await results_grow(traffic, 10, 30, "results after the failover")
        traffic.stop_writing()
        await assert_clients_caught_up_with_no_seq_reused(traffic)
        facts = await assert_nothing_lost(traffic, servers, database_url, resets_allowed=True)
        await assert_every_result_announced(traffic)
    assert resumed < RESUME_SECONDS, f"events flowed again only {resumed:.1f}s after the kill"
    print(
        f"failover: events again {resumed:.1f}s after the kill, {during} results accepted "
        f"meanwhile; {facts}"
    )
