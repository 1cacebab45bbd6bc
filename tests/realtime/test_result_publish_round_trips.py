"""Results on the Redis engine pay the engine's round trip once per group, not once per result.

The writer commits concurrent results as one group, and its publisher offered their events to
Redis one at a time: each a round trip, and each a wait behind whatever else Redis was doing
(at 1,000,000 players, a rebuild's staging scripts: 17 results/s at p50 1 s). The last answer
of a group of N waited N round trips. Here Redis sits behind a proxy that delays every
chunk, so a round trip has a known, large cost.

The results arrive as a trickle, one every few milliseconds (a game server posting results as
matches end; a loaded machine made the same of a burst sent at once, and a CI run failed so):
the writer then commits them in many small groups while the publisher's round trip is under
way, and those groups must share the publisher's next round trip, not take one each.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from ..clients import HttpApi, SSEClient
from ..faults import FaultProxy
from ..services import LiveServer, RedisServer, redis_command

ONE_WAY_DELAY = 0.15  # a round trip through the proxy: >= 0.3 s
ROUND_TRIP = 2 * ONE_WAY_DELAY
RESULTS = 32
PACE = 0.025  # between two results: they arrive over 0.8 s, while a round trip is under way
# One at a time, the last result's events went out after at least RESULTS round trips (9.6 s),
# from the request or (after a publish timed out) from the relay, also one at a time. Grouped,
# they take a few (SCRIPT EXISTS and the pipeline: measured 0.75-1.05 s a group here), and the
# trickle makes a few groups: about 2 s in all. The bound is the one-at-a-time cost, which a
# loaded machine cannot make up for.
BOUND = RESULTS * ROUND_TRIP


@pytest.fixture(name="slow_redis")
def _slow_redis(redis_url: str, redis_server: RedisServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(redis_server.port).start()
    yield proxy
    proxy.stop()


def publish_pipelines(redis_server: RedisServer) -> int:
    """Pipelines of the publish script Redis has run so far: redis-py checks a pipeline's
    scripts with one SCRIPT EXISTS before sending it, and the engine pipelines nothing else."""
    stats = str(redis_command(redis_server.port, "INFO", "commandstats"))
    found = re.search(r"cmdstat_script\|exists:calls=(\d+)", stats)
    return int(found.group(1)) if found else 0


async def test_a_group_of_results_is_published_in_one_round_trip(
    live_servers: Callable[..., LiveServer], slow_redis: FaultProxy, redis_server: RedisServer
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
        pipelines_before = publish_pipelines(redis_server)

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
            posting = []
            for match_id, winner in matches:
                posting.append(asyncio.create_task(result(client, match_id, winner)))
                await asyncio.sleep(PACE)  # the arrivals' pace is the test's input
            latencies = await asyncio.gather(*posting)
        await sse.wait_for(
            lambda events: sum(e["event"] == "match:result" for e in events) >= RESULTS,
            timeout=60,
        )
        delivered = time.perf_counter() - started
        pipelines = publish_pipelines(redis_server) - pipelines_before
    # Counted, not timed: one at a time, each small group paid a round trip of its own.
    assert 1 <= pipelines <= RESULTS // 4, f"{RESULTS} results published in {pipelines} pipelines"
    assert max(latencies) < BOUND, sorted(latencies)
    assert delivered < BOUND, f"events of {RESULTS} results delivered after {delivered:.2f} s"
    print(
        f"{RESULTS} results, one every {PACE * 1000:.0f} ms: {pipelines} pipelines, last answer "
        f"{max(latencies):.2f} s, events delivered {delivered:.2f} s after the first was sent"
    )
