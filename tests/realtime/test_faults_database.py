"""The database unreachable for 10 s under load (PostgreSQL behind the fault proxy, which
answers every connection, open or new, with an RST: a host that is down): writes answer 503
with Retry-After (never another 5xx), nothing is half-applied (every completed match moved
both players' ratings: an ELO replay of SQL gives SQL), and the streams keep flowing for what
does not need the database: announcements published meanwhile reach every client, in order,
on all three transports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from quart_app.store.database import PG_STATEMENT_TIMEOUT

from ..fault_checks import HEAL_SECONDS, Differs, assert_nothing_lost, results_grow, status_of
from ..fault_traffic import Traffic
from ..faults import FaultProxy
from ..helpers import eventually
from ..services import LiveServer

SECRET = "fault-suite-secret-0123456789-abcdef"
OUTAGE_SECONDS = 10.0
# The first 503 after the network went silent, counted from then. Each write waits for at most
# two PostgreSQL timeouts (a statement's, a new connection's: README, known limits), but the
# writer posts one write at a time, and the write in flight when the network went may have
# committed already: it is answered 2xx after its two timeouts (the pool's reset of its
# connection and the delete of its outbox row, neither of which fails a durable write). The
# next write is the one answered 503, two timeouts later. Plus a margin for a loaded machine.
# (A write that hangs until the network returns never gets its 503: the outage lasts until
# this bound fails.)
REFUSED_WITHIN = 2 * (2 * PG_STATEMENT_TIMEOUT) + 5.0
ANNOUNCEMENTS = 5

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.mark.parametrize("db_kind", ["postgres"])  # a network fault needs a networked database
@pytest.mark.parametrize(
    "fault",
    # refuse: a write racing the reset used to answer 500 (asyncpg's InterfaceError for a
    # connection already gone); tests/store/test_database_faults.py pins each such point.
    ["refuse", "blackhole"],
)
async def test_the_database_unreachable_for_10s_writes_503_nothing_half_applied_streams_flow(
    fault: str, database_url: str, redis_url: str, live_servers: Callable[..., LiveServer]
) -> None:
    port = int(database_url.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = FaultProxy(port).start()
    try:
        env = {
            "DATABASE_URL": database_url.replace(f":{port}/", f":{proxy.port}/"),
            "REDIS_URL": redis_url,
            "JWT_SECRET": SECRET,
        }
        servers = [live_servers(env=env), live_servers(env=env)]
        async with Traffic(servers) as traffic:
            await results_grow(traffic, 10, 30, "results before the outage")
            unavailable_before = traffic.written.unavailable
            statuses_before = traffic.written.statuses.copy()
            # refuse: a host that is down (RST); blackhole: a network that drops silently
            getattr(proxy, fault)()
            went = time.monotonic()

            # Announcements need no database: every client gets them while it is away.
            async with httpx.AsyncClient(timeout=10) as client:
                for n in range(ANNOUNCEMENTS):
                    answer = await client.post(
                        servers[n % 2].url + "/api/publish",
                        json={"room": "matches", "event": "announcement", "data": {"n": n}},
                        headers={"Authorization": f"Bearer {traffic.writer_token}"},
                    )
                    assert answer.status_code == 202, answer.text

            async def announcements_delivered() -> bool | Differs:
                announced = sum(1 for e, _ in traffic.reference.events if e == "announcement")
                traffic.settle_checks()
                behind = [
                    (w.check.name, w.check.expected, len(w.check.pending), w.check.failures)
                    for w in traffic.watchers
                    if w.check.expected < len(traffic.reference) or w.check.pending
                ]
                # ours (the reference starts after the start marker), and no client behind
                if announced < ANNOUNCEMENTS or behind:
                    return Differs(
                        f"reference: {announced} announcements, {len(traffic.reference)} "
                        f"events; clients behind: {behind}"
                    )
                return True

            delivered = await eventually(
                announcements_delivered, OUTAGE_SECONDS, "the announcements delivered to all"
            )

            async def refused() -> bool | Differs:
                if traffic.written.unavailable > unavailable_before:
                    return True
                since = traffic.written.statuses - statuses_before
                return Differs(f"the writes since the outage got {dict(since)}")

            await eventually(
                refused,
                REFUSED_WITHIN - (time.monotonic() - went),
                f"a write answered 503 + Retry-After within {REFUSED_WITHIN:.0f} s of the outage",
            )
            left = OUTAGE_SECONDS - (time.monotonic() - went)
            if left > 0:
                await asyncio.sleep(left)  # the outage's length is the test's input
            results_during = traffic.written.statuses.copy()
            proxy.pass_through()

            async def both_ready() -> bool:
                return all([await status_of(s.url) == 200 for s in servers])

            healed = await eventually(both_ready, HEAL_SECONDS, "/readyz 200 on both")
            await results_grow(traffic, 10, 30, "results after the database returned")
            traffic.stop_writing()
            facts = await assert_nothing_lost(traffic, servers, database_url)
    finally:
        proxy.stop()
    print(
        f"database away {OUTAGE_SECONDS:.0f}s: announcements delivered after {delivered:.1f}s, "
        f"ready {healed:.1f}s after it returned; statuses during: {dict(results_during)}; {facts}"
    )
