"""Results on the Redis engine pay the engine's round trip once per group, not once per result.

The writer commits concurrent results as one group, and its publisher offered their events to
Redis one at a time: each a round trip, and each a wait behind whatever else Redis was doing
(at 1,000,000 players, a rebuild's staging scripts: 17 results/s at p50 1 s). The last answer
of a group of N waited N round trips. Here Redis sits behind a proxy that delays every
chunk, so a round trip has a known, large cost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from ..clients import HttpApi, SSEClient
from ..faults import FaultProxy
from ..services import LiveServer, RedisServer

ONE_WAY_DELAY = 0.15  # a round trip through the proxy: >= 0.3 s
RESULTS = 32


@pytest.fixture(name="slow_redis")
def _slow_redis(redis_url: str, redis_server: RedisServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(redis_server.port).start()
    yield proxy
    proxy.stop()


async def test_a_group_of_results_is_published_in_one_round_trip(
    live_servers: Callable[..., LiveServer], slow_redis: FaultProxy
) -> None:
    server = live_servers(env={"REDIS_URL": f"redis://127.0.0.1:{slow_redis.port}/0"})
    admin = HttpApi(server.url, server.token("ops", "matches:write admin"))
    # Two players per match, none shared: nothing orders one result's events after another's.
    matches = []
    for i in range(RESULTS):
        winner, loser = f"w{i:02d}", f"l{i:02d}"
        match = await admin.request("POST", "/api/matches", {"player_ids": [winner, loser]})
        matches.append((match["match_id"], winner))
    async with SSEClient(server.url, "matches", server.token("viewer")) as sse:
        slow_redis.delay(ONE_WAY_DELAY)

        async def result(client: httpx.AsyncClient, match_id: str, winner: str) -> float:
            sent = time.perf_counter()
            answer = await client.post(
                f"/api/matches/{match_id}/result",
                json={"winner_id": winner},
                headers=admin.headers,
            )
            assert answer.status_code == 200, answer.text
            return time.perf_counter() - sent

        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            latencies = await asyncio.gather(*(result(client, m, w) for m, w in matches))
        await sse.wait_for(
            lambda events: sum(e["event"] == "match:result" for e in events) >= RESULTS,
            timeout=60,
        )
        delivered = time.perf_counter() - started
    # One at a time, the last result's events went out after at least RESULTS round trips
    # (9.6 s), from the request or (after a publish timed out) from the relay, also one at a
    # time. A group costs a few (SCRIPT EXISTS, the pipeline: measured 0.75-1.05 s a group
    # here), and the results form a few groups.
    bound = RESULTS * 2 * ONE_WAY_DELAY / 2
    assert max(latencies) < bound, sorted(latencies)
    assert delivered < bound, f"events of {RESULTS} results delivered after {delivered:.2f} s"
