"""Redis faults under load, with real processes: two instances sharing one Redis (through a
fault proxy where the network fails) and one SQLite file, results POSTed throughout, and
clients on SSE, WebSocket and long-poll following `leaderboard:global` and `matches`.

What must hold (issue 11): no 5xx but 503 with Retry-After; every 2xx result in SQL exactly
once; the boards of both instances equal to SQL within 10 s of the fault ending; every client
gapless (each event once, in the log's order) or told `stream:reset`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from ..clients import SSEClient
from ..fault_checks import HEAL_SECONDS, assert_nothing_lost, results_grow, status_of
from ..fault_traffic import Traffic
from ..faults import FaultProxy
from ..helpers import eventually
from ..redis_hold import busy
from ..services import LiveServer, RedisServer

SECRET = "fault-suite-secret-0123456789-abcdef"
DETECT_SECONDS = 10.0  # /readyz 503 after the network goes
BLACKHOLE_SECONDS = 30.0  # issue 11: "Redis blackholed for 30 s"
BUSY_MS = 5000  # longer than a command's bound (5 s), so waiting it out is no answer

pytestmark = pytest.mark.slow


def instances(
    live_servers: Callable[..., LiveServer], redis_url: str, count: int = 2
) -> list[LiveServer]:
    env = {"REDIS_URL": redis_url, "JWT_SECRET": SECRET, "LOG_LEVEL": "info"}
    return [live_servers(env=env) for _ in range(count)]


@pytest.fixture(name="aof_redis", params=[False, True], ids=["no-aof", "aof"])
def _aof_redis(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    server = RedisServer(appendonly=request.param)
    server.start()
    yield server
    server.stop()


async def test_redis_killed_and_restarted_mid_load_loses_nothing(
    aof_redis: RedisServer, live_servers: Callable[..., LiveServer], tmp_path: object
) -> None:
    servers = instances(live_servers, aof_redis.url)
    database_url = servers[0].env["DATABASE_URL"]
    async with Traffic(servers) as traffic:
        await results_grow(traffic, 15, 30, "results before the crash")
        aof_redis.kill()
        await results_grow(traffic, 5, 30, "results accepted while Redis is dead")
        aof_redis.start()
        restarted = time.monotonic()
        await results_grow(traffic, 15, 30, "results after the restart")
        traffic.stop_writing()
        facts = await assert_nothing_lost(
            traffic, servers, database_url, resets_allowed=not aof_redis.appendonly
        )
    print(f"AOF={aof_redis.appendonly}: {facts}, {time.monotonic() - restarted:.1f}s after restart")


async def all_ready(servers: list[LiveServer], status: int) -> bool:
    return all([await status_of(s.url) == status for s in servers])


@pytest.mark.timeout(240)  # a 30 s fault between set-up, load and checks of about a minute
async def test_redis_blackholed_is_detected_writes_stay_durable_and_it_heals(
    own_redis: RedisServer, live_servers: Callable[..., LiveServer]
) -> None:
    proxy = FaultProxy(own_redis.port).start()
    try:
        servers = instances(live_servers, f"redis://127.0.0.1:{proxy.port}/0")
        database_url = servers[0].env["DATABASE_URL"]
        async with Traffic(servers) as traffic:
            await results_grow(traffic, 10, 30, "results before the blackhole")
            proxy.blackhole()  # connections stay open, nothing gets through: no RST to act on
            went = time.monotonic()
            detected = await eventually(
                lambda: all_ready(servers, 503), DETECT_SECONDS, "/readyz 503 on both"
            )
            before = len(traffic.written.results_ok)
            await results_grow(traffic, 5, BLACKHOLE_SECONDS, "2xx results during the blackhole")
            left = BLACKHOLE_SECONDS - (time.monotonic() - went)
            if left > 0:
                await asyncio.sleep(left)  # the fault's length is the test's input, not a wait
            during = len(traffic.written.results_ok) - before
            proxy.pass_through()
            healed = await eventually(
                lambda: all_ready(servers, 200), HEAL_SECONDS, "/readyz 200 on both"
            )
            await results_grow(traffic, 10, 30, "results after the network returned")
            traffic.stop_writing()
            facts = await assert_nothing_lost(traffic, servers, database_url)
    finally:
        proxy.stop()
    print(
        f"blackhole {BLACKHOLE_SECONDS:.0f}s: detected after {detected:.1f}s, {during} results "
        f"accepted meanwhile, ready {healed:.1f}s after the network returned; {facts}"
    )


async def test_redis_held_by_a_script_answers_busy_and_nothing_is_lost(
    own_redis: RedisServer, live_servers: Callable[..., LiveServer]
) -> None:
    """A script running past busy-reply-threshold (an operator's EVAL, a slow FUNCTION):
    Redis is up and connected, and answers every command -BUSY. Writes are still accepted
    (their events wait in the outbox), nothing is a 500, and every client ends gapless."""
    servers = instances(live_servers, own_redis.url)
    database_url = servers[0].env["DATABASE_URL"]
    async with Traffic(servers) as traffic:
        await results_grow(traffic, 10, 30, "results before the script")
        before = len(traffic.written.results_ok)
        async with busy(own_redis.url, BUSY_MS):
            opened = [await stream_opened(server, n) for n, server in enumerate(servers)]
            await results_grow(traffic, 3, BUSY_MS / 1000, "2xx results while Redis is busy")
        during = len(traffic.written.results_ok) - before
        await results_grow(traffic, 10, 30, "results after the script ended")
        traffic.stop_writing()
        facts = await assert_nothing_lost(traffic, servers, database_url)
    print(f"busy {BUSY_MS} ms: streams opened {opened}, {during} results accepted; {facts}")


async def stream_opened(server: LiveServer, n: int) -> int:
    """A new stream while Redis is busy: admitted (limits fail open) or 503 with Retry-After,
    never a 500. Its status."""
    async with SSEClient(server.url, "matches", server.token(f"newcomer-{n}")) as sse:
        if sse.status == 200:
            await sse.wait_for(lambda events: bool(events), what="stream:open")
            assert sse.events[0]["event"] == "stream:open"
        else:
            assert sse.status == 503, (sse.status, sse.body)
            assert sse.response_headers.get("retry-after"), sse.response_headers
        return sse.status
