"""Redis Sentinel: the failover that loses writes (the promoted replica lacks the last log
entries), and a real master + replica + 3 sentinels failing over. Real redis-server processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis

from quart_app.engine.base import EngineUnavailable, LogGap, Publication
from quart_app.engine.board_state import BoardIncomplete
from quart_app.engine.redis import RedisEngine
from tests.services import SentinelSet

from .conftest import Collector, draft, rows

MakeRedis = Callable[..., Awaitable[RedisEngine]]


@pytest.fixture(name="admin")
async def _admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def rewind_log(admin: aioredis.Redis, to_seq: int) -> None:
    """What a promoted replica that missed the last writes looks like: the same epoch, the
    log and its seq behind what the old master handed out."""
    kept = await admin.xrange("lrp:log", "-", f"{to_seq}-0")
    await admin.delete("lrp:log")
    for entry_id, fields in kept:
        await admin.xadd("lrp:log", fields, id=entry_id)
    await admin.hset("lrp:meta", "seq", to_seq)


async def test_a_log_behind_the_delivered_seq_starts_a_new_epoch(
    make_redis: MakeRedis, admin: aioredis.Redis
) -> None:
    a = await make_redis()
    b = await make_redis()
    on_b = Collector(b)
    for n in range(5):
        await a.publish(Publication(events=(draft(n),)))
    await on_b.wait_count(5)
    old_epoch = b.epoch
    cursor_held = on_b.events[-1].cursor  # a client of B holds seq 5

    await rewind_log(admin, 3)  # the new master has seqs 1..3 only

    [after] = await a.publish(Publication(events=(draft(99),)))
    # never seq 4 or 5 again in the old epoch: clients holding them would skip the new events
    assert after.cursor.rpartition(".")[0] != old_epoch, after.cursor
    assert after.cursor.endswith(".1")
    # B's listeners move on to the new epoch (the hub then tells clients stream:reset)
    await on_b.wait_for(lambda ev: ev[-1].cursor == after.cursor, 5, "the new epoch's event")
    assert b.epoch == a.epoch != old_epoch
    # a client resuming from what it held is told its position is unknown, not fed a gap
    with pytest.raises(LogGap):
        await b.read_after(int(cursor_held.rpartition(".")[2]), 10)
    # the board may lack rows the old master had: it is incomplete until rebuilt from SQL
    with pytest.raises(BoardIncomplete):
        await b.board_page(0, 10)
    await b.board_replace(rows())
    assert await b.board_page(0, 10) == ([], 0)


async def test_a_quiet_instance_notices_the_rewind_on_its_own(
    make_redis: MakeRedis, admin: aioredis.Redis
) -> None:
    """No publication after the failover: the catch-up timer's read finds it."""
    a = await make_redis(backfill_interval=0.2)
    on_a = Collector(a)
    for n in range(3):
        await a.publish(Publication(events=(draft(n),)))
    old_epoch = a.epoch
    await rewind_log(admin, 1)
    await on_a.wait_for(lambda _ev: a.epoch != old_epoch, 5, "a new epoch")
    [event] = await a.publish(Publication(events=(draft(7),)))
    assert event.cursor == f"{a.epoch}.1"


def test_sentinel_urls_are_parsed_and_bad_ones_refused() -> None:
    from quart_app.config import ConfigError, load_settings
    from quart_app.engine.redis.connection import SentinelURL

    url = SentinelURL.parse("redis+sentinel://u:p%40ss@h1:26379,h2:26380/mymaster/2")
    assert url.sentinels == [("h1", 26379), ("h2", 26380)]
    assert (url.service, url.db, url.username, url.password) == ("mymaster", 2, "u", "p@ss")
    assert load_settings(redis_url="redis+sentinel://h:1/m").redis_url == "redis+sentinel://h:1/m"
    for bad in (
        "redis+sentinel://h:1",  # no service
        "redis+sentinel://h/m",  # no port
        "redis+sentinel://h:1/m/x",  # bad db
    ):
        with pytest.raises(ConfigError, match=r"\bREDIS_URL\b"):
            load_settings(redis_url=bad)


@pytest.fixture(name="sentinels")
def _sentinels() -> Iterator[SentinelSet]:
    sentinels = SentinelSet()
    sentinels.start()
    yield sentinels
    sentinels.stop()


@pytest.mark.slow
async def test_the_engine_follows_a_sentinel_failover(
    make_redis: MakeRedis, sentinels: SentinelSet
) -> None:
    """kill -9 of the master: the sentinels promote the replica, writes resume on it, and the
    listeners go on with no silent gap (the same epoch continued, or a new one)."""
    a = await make_redis(sentinels.url, backfill_interval=0.2)
    on_a = Collector(a)
    await a.publish(Publication(events=(draft(1),)))
    await on_a.wait_count(1)
    old_master = sentinels.master_port()
    sentinels.kill_master()
    deadline = time.monotonic() + 30
    event = None
    while event is None:
        assert time.monotonic() < deadline, "writes did not resume within 30 s"
        try:
            [event] = await a.publish(Publication(events=(draft(2),)))
        except EngineUnavailable:
            await asyncio.sleep(0.2)  # the outbox's retry, in short
    # (not master_port() at once: writes resume as soon as the failover's leader names the
    # new master, while the sentinel asked may still name the old one for up to 2 s)
    await asyncio.to_thread(sentinels.wait_for_new_master, old_master, 30)
    await on_a.wait_for(lambda ev: ev[-1].cursor == event.cursor, 10, "the event after it")
    same_epoch = [e for e in on_a.events if e.cursor.rpartition(".")[0] == a.epoch]
    assert [e.seq for e in same_epoch] == list(range(1, len(same_epoch) + 1))


async def test_closing_closes_every_client_even_when_one_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client whose close fails (a connection to the dead master timing out on close) must
    not leave the others open: the sentinels' connections stayed open after such a stop (a
    ResourceWarning at exit failed one run of the failover test on a loaded machine)."""
    from quart_app.engine.redis.connection import RedisConnection

    connection = RedisConnection(
        "redis+sentinel://127.0.0.1:1,127.0.0.1:2/lrp", bus_health_check_interval=1
    )
    assert connection.sentinel is not None
    closed: list[str] = []

    def closer(name: str, fails: bool = False) -> Callable[[], Awaitable[None]]:
        async def aclose() -> None:
            closed.append(name)
            if fails:
                raise TimeoutError(f"{name}: timed out closing")

        return aclose

    monkeypatch.setattr(connection.bus_client, "aclose", closer("bus", fails=True))
    monkeypatch.setattr(connection.client, "aclose", closer("client"))
    for n, sentinel in enumerate(connection.sentinel.sentinels):
        monkeypatch.setattr(sentinel, "aclose", closer(f"sentinel-{n}"))
    with pytest.raises(TimeoutError):
        await connection.close()  # the failure is still reported, after the others closed
    assert sorted(closed) == ["bus", "client", "sentinel-0", "sentinel-1"]
