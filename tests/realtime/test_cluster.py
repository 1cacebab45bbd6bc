"""Several real instances sharing one Redis and one SQL database act as one service."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import pytest

from ..clients import HttpApi, SSEClient, WSClient, log_events, names, poll, poll_until
from ..helpers import eventually
from ..services import LiveServer, RedisServer

SECRET = "cluster-test-secret-0123456789"


@pytest.fixture(name="cluster")
def _cluster(
    live_servers: Callable[..., LiveServer], redis_url: str
) -> Callable[..., list[LiveServer]]:
    def start(count: int = 2, **env: str) -> list[LiveServer]:
        shared = {"REDIS_URL": redis_url, "JWT_SECRET": SECRET, **env}
        return [live_servers(env=shared) for _ in range(count)]

    return start


def _ns(events: list[dict]) -> list[object]:  # type: ignore[type-arg]
    return [e["data"]["n"] for e in events if e["event"] == "announcement"]


async def test_results_on_b_reach_every_transport_on_a_once_in_order(cluster) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster()
    token = a.token("viewer")
    writer = HttpApi(b.url, b.token("game", "matches:write"))
    rooms = "matches,leaderboard:global"
    start = (await poll(a.url, rooms, token)).json()["cursor"]
    async with SSEClient(a.url, rooms, token) as sse, WSClient(a.url, token) as ws:
        await ws.subscribe(rooms.split(","))
        players = ["p1", "p2", "p3", "p4"]
        for i in range(6):
            await writer.play(players[i % 4], players[(i + 1) % 4], players[i % 4])
        # created, started, result, leaderboard:update per match, and a leaderboard:update
        # when a match brings newcomers to the board (p1+p2, then p3, then p4)
        want = 6 * 4 + 3
        await sse.wait_for(lambda evs: len(log_events(evs)) >= want, timeout=10)
        await ws.wait_for(lambda evs: len(log_events(evs)) >= want, timeout=10)
        polled, _ = await poll_until(a.url, rooms, token, start, lambda evs: len(evs) >= want)
        via_sse, via_ws = log_events(sse.events), log_events(ws.events)
        assert len(via_sse) == len(via_ws) == len(polled) == want
        assert [e["id"] for e in via_sse] == [e["id"] for e in via_ws] == [e["id"] for e in polled]
        assert names(via_sse[:5]) == [
            "match:created",
            "leaderboard:update",
            "match:started",
            "match:result",
            "leaderboard:update",
        ]
        assert len({e["id"] for e in via_sse}) == want
    # The board agrees on both instances.
    async with (
        SSEClient(b.url, "leaderboard:global", token) as board_b,
        SSEClient(a.url, "leaderboard:global", token) as board_a,
    ):
        initial_a = await board_a.wait_event("leaderboard:initial")
        initial_b = await board_b.wait_event("leaderboard:initial")
        assert initial_a["data"] == initial_b["data"]
        assert initial_a["data"]["total"] == 4


@pytest.mark.parametrize("transport", ["poll", "ws", "sse"])
async def test_resume_on_the_other_instance_and_transport(cluster, transport: str) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster()
    token = a.token("viewer")
    admin = HttpApi(b.url, b.token("ops", "admin"))
    async with SSEClient(a.url, "matches", token) as sse:
        await admin.announce("matches", {"n": 0})
        await sse.wait_for(lambda evs: _ns(evs) == [0])
        cursor = sse.cursor
    for n in range(1, 6):
        await admin.announce("matches" if n % 2 else "presence", {"n": n})
    missed = [1, 3, 5]
    if transport == "poll":
        got, _ = await poll_until(b.url, "matches", token, cursor, lambda evs: len(evs) >= 3)
    elif transport == "ws":
        async with WSClient(b.url, token) as ws:
            await ws.subscribe(["matches"], cursor=cursor)
            got = log_events(await ws.wait_for(lambda evs: len(evs) >= 3))
    else:
        async with SSEClient(b.url, "matches", token, last_event_id=cursor) as again:
            got = log_events(await again.wait_for(lambda evs: len(log_events(evs)) >= 3))
    assert _ns(got) == missed


async def test_pubsub_connection_killed_mid_stream_loses_nothing(
    cluster, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster()
    token = a.token("viewer")
    admin = HttpApi(b.url, b.token("ops", "admin"))
    async with SSEClient(a.url, "matches", token) as sse:
        await sse.wait_event("stream:open")
        publisher = asyncio.create_task(
            admin.announce_many("matches", [{"n": n} for n in range(300)])
        )
        await sse.wait_for(lambda evs: len(_ns(evs)) >= 50, timeout=10)
        killed = redis_server.cli("CLIENT", "KILL", "TYPE", "pubsub")
        await publisher
        await sse.wait_for(lambda evs: len(_ns(evs)) >= 300, timeout=15)
        assert _ns(sse.events) == list(range(300))
        assert int(killed) >= 2  # both instances' subscriptions were cut


async def test_subscribe_is_routed_to_the_instance_holding_the_stream(cluster) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster()
    token = a.token("ann")
    via_b = HttpApi(b.url, token)
    admin = HttpApi(b.url, b.token("ops", "admin"))
    async with SSEClient(a.url, "presence", token) as sse:
        await sse.wait_event("stream:open")
        answer = await via_b.request(
            "POST", "/api/subscribe", {"connection_id": sse.connection_id, "rooms": ["matches"]}
        )
        assert answer == {"rooms": ["matches", "presence"]}
        await admin.announce("matches", {"n": 1})
        await sse.wait_for(lambda evs: _ns(evs) == [1])
        answer = await via_b.request(
            "POST", "/api/unsubscribe", {"connection_id": sse.connection_id, "rooms": ["matches"]}
        )
        assert answer == {"rooms": ["presence"]}
        await HttpApi(b.url, b.token("bob")).request(
            "POST",
            "/api/subscribe",
            {"connection_id": sse.connection_id, "rooms": ["matches"]},
            expect=403,
        )
        # The holding instance frozen: 503 with Retry-After after about 2 s.
        assert a.process is not None
        os.kill(a.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            import httpx

            async with httpx.AsyncClient(base_url=b.url, timeout=10) as client:
                frozen = await client.post(
                    "/api/subscribe",
                    headers=via_b.headers,
                    json={"connection_id": sse.connection_id, "rooms": ["matches"]},
                )
            assert frozen.status_code == 503
            assert frozen.headers["retry-after"]
            assert 1.5 < time.monotonic() - started < 5
        finally:
            os.kill(a.process.pid, signal.SIGCONT)
    a.kill()
    await via_b.request(
        "POST",
        "/api/subscribe",
        {"connection_id": sse.connection_id, "rooms": ["matches"]},
        expect=404,
    )


async def test_presence_two_tabs_on_two_instances_and_a_crash(cluster) -> None:  # type: ignore[no-untyped-def]
    # A crashed instance's connections leave within PRESENCE_TTL_SECONDS (PROTOCOL: 15 s by
    # default); a short one, as in test_limits, so the test waits 5 s for it, not 15.
    ttl = 5.0
    a, b = cluster(PRESENCE_TTL_SECONDS=str(ttl))
    watcher = b.token("watcher")
    ann = a.token("ann")

    def ann_events(events: list[dict], name: str) -> int:  # type: ignore[type-arg]
        return sum(1 for e in events if e["event"] == name and e["data"]["player_id"] == "ann")

    async with SSEClient(b.url, "presence", watcher) as watch:
        tab1 = await SSEClient(a.url, "matches", ann).__aenter__()
        tab2 = await SSEClient(b.url, "matches", ann).__aenter__()
        await watch.wait_for(lambda evs: ann_events(evs, "player:online") == 1)
        await tab2.close()
        started = time.monotonic()
        a.kill()  # tab1's instance crashes: no cleanup at all
        offline = await watch.wait_for(
            lambda evs: ann_events(evs, "player:offline") == 1, timeout=ttl + 10
        )
        assert time.monotonic() - started < ttl + 0.5
        await tab1.close()
        # Exactly one online and one offline for ann, whatever the number of tabs and instances.
        await HttpApi(b.url, b.token("ops", "admin")).announce("presence", {"n": "marker"})
        await watch.wait_for(lambda evs: _ns(evs) == ["marker"])
        assert ann_events(watch.events, "player:online") == 1
        assert ann_events(watch.events, "player:offline") == 1
        assert offline[-1]["event"] in ("player:offline", "announcement")


async def test_redis_losing_its_data_resets_streams_and_rebuilds_the_board(
    cluster, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster()
    token = a.token("viewer")
    writer = HttpApi(b.url, b.token("game", "matches:write"))
    await writer.play("ann", "bob", "ann")
    want = {"ann": 1216.0, "bob": 1184.0, "cy": 1216.0, "dee": 1184.0}

    def ratings(initial: dict) -> dict[str, float]:  # type: ignore[type-arg]
        return {e["player_id"]: e["rating"] for e in initial["data"]["entries"]}

    async with SSEClient(a.url, "leaderboard:global,matches", token) as sse:
        await sse.wait_event("leaderboard:initial")
        redis_server.cli("FLUSHALL")
        await writer.play("cy", "dee", "cy")  # the first write after the loss starts a new log

        # The rebuild ends with a fresh board for the watchers; that board and the updates
        # after it end equal to SQL (by content). The rebuild may come before the result or
        # after it, depending on when an instance notices the loss.
        def watched(evs: list[dict]) -> dict[str, float]:  # type: ignore[type-arg]
            last = max(i for i, e in enumerate(evs) if e["event"] == "leaderboard:initial")
            board = ratings(evs[last])
            for e in evs[last + 1 :]:
                if e["event"] == "leaderboard:update":
                    board.update({c["player_id"]: c["rating"] for c in e["data"]["changes"]})
            return board

        await sse.wait_for(
            lambda evs: len(sse.named("leaderboard:initial")) > 1 and watched(evs) == want,
            timeout=15,
        )
        assert sse.named("stream:reset")[0]["data"] == {"reason": "unknown"}
        # Never a partial board: every snapshot after the loss holds all four players (the
        # reset's comes from SQL while the Redis board holds only the new write's rows).
        after_loss = sse.named("leaderboard:initial")[1:]
        assert after_loss and all(i["data"]["total"] == 4 for i in after_loss), after_loss

    # The board comes back from SQL: all four players, with their ratings, on both instances.
    async def board(server: LiveServer) -> dict[str, float]:
        page = await HttpApi(server.url, token).request("GET", "/api/leaderboard")
        return {e["player_id"]: e["rating"] for e in page["entries"]}

    async def boards() -> tuple[dict[str, float], dict[str, float]]:
        return await board(a), await board(b)

    async def rebuilt() -> bool:
        # on a timeout, `eventually` shows the last failed assert: the boards it saw last
        seen = await boards()
        assert seen == (want, want), seen
        return True

    await eventually(rebuilt, 10, "both boards rebuilt from SQL")
