"""Rank windows (PROTOCOL 1, 2, 3.2): `leaderboard:top:{n}` and
`leaderboard:around:{id}:{radius}` on SSE, WebSocket and long-poll, against a real instance.

The board the tests build (ELO K=32, everyone starts at 1200; ties by player id):
a, c, e win once (1216) and b, d, f lose once (1184): ranks a1 c2 e3 b4 d5 f6.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ..clients import HttpApi, SSEClient, WSClient, poll
from ..helpers import lane_requests, lane_took
from ..services import LiveServer

Envelope = dict[str, Any]


@pytest.fixture(name="admin")
def _admin(live_server: LiveServer) -> HttpApi:
    return HttpApi(live_server.url, live_server.token("ops", "matches:write admin"))


async def six_players(admin: HttpApi) -> None:
    for winner, loser in (("a", "b"), ("c", "d"), ("e", "f")):
        await admin.play(winner, loser, winner)


def windows(events: list[Envelope], room: str | None = None) -> list[Envelope]:
    return [
        e
        for e in events
        if e["event"] == "leaderboard:window" and (room is None or e["rooms"] == [room])
    ]


def ids(window: Envelope) -> list[str]:
    return [entry["player_id"] for entry in window["data"]["entries"]]


async def board(base_url: str, token: str, offset: int, limit: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        answer = await client.get(
            "/api/leaderboard",
            params={"offset": str(offset), "limit": str(limit)},
            headers={"Authorization": f"Bearer {token}"},
        )
    entries: list[dict[str, Any]] = answer.json()["entries"]
    return entries


def count_at_least(room: str, n: int) -> Callable[[list[Envelope]], bool]:
    return lambda events: len(windows(events, room)) >= n


async def test_top_window_on_sse_changes_only_when_a_result_touches_it(
    live_server: LiveServer, admin: HttpApi
) -> None:
    await six_players(admin)
    token = live_server.token("viewer")
    room = "leaderboard:top:2"
    async with SSEClient(live_server.url, f"{room},matches", token) as sse:
        first = (await sse.wait_for(count_at_least(room, 1)))[1]
        assert first["event"] == "leaderboard:window" and first["rooms"] == [room]
        assert first["data"]["window"] == room and first["data"]["total"] == 6
        assert ids(first) == ["a", "c"]
        assert [e["rank"] for e in first["data"]["entries"]] == [1, 2]
        assert first["id"] == sse.named("stream:open")[0]["data"]["cursor"]
        # Outside the top 2: d 5 -> 4, b 4 -> 5 (f stays 6). Nothing for this window...
        await admin.play("d", "f", "d", match_id="outside")
        # ...which the next result that does touch it proves: e 3 -> 1 enters, a leaves.
        await admin.play("e", "a", "e", match_id="inside")
        await sse.wait_for(count_at_least(room, 2), timeout=10)
        await sse.wait_for(lambda evs: sum(e["event"] == "match:result" for e in evs) >= 2)
        await asyncio.sleep(0)  # (nothing to wait for: asserting what has arrived)
        later = windows(sse.events, room)[1:]
        assert [ids(w) for w in later] == [["e", "c"]], "a window for the outside result"
        assert later[0]["data"]["entries"] == await board(live_server.url, token, 0, 2)


async def test_edge_of_the_top_window_entering_and_leaving(
    live_server: LiveServer, admin: HttpApi
) -> None:
    await six_players(admin)
    token = live_server.token("viewer")
    room = "leaderboard:top:3"
    async with SSEClient(live_server.url, room, token) as sse:
        await sse.wait_for(count_at_least(room, 1))
        assert ids(windows(sse.events)[0]) == ["a", "c", "e"]
        # b (rank 4, just below the edge) beats e (rank 3, the edge): they swap places.
        await admin.play("b", "e", "b")
        await sse.wait_for(count_at_least(room, 2), timeout=10)
        assert ids(windows(sse.events)[1]) == ["a", "c", "b"]
        assert windows(sse.events)[1]["data"]["entries"] == await board(
            live_server.url, token, 0, 3
        )


async def test_around_window_on_websocket(live_server: LiveServer, admin: HttpApi) -> None:
    await six_players(admin)
    token = live_server.token("viewer")
    room = "leaderboard:around:d:1"
    async with WSClient(live_server.url, token) as ws:
        assert (await ws.subscribe([room, "matches"]))["rooms"] == [room, "matches"]
        await ws.wait_for(count_at_least(room, 1))
        assert ids(windows(ws.events)[0]) == ["b", "d", "f"]  # ranks 4, 5, 6
        # Outside (ranks 1-3 only: c beats a, c 2 -> 1, e 3 -> 2, a 1 -> 3): nothing; then
        # the centre itself moves (d beats b: d 5 -> 4, b 4 -> 6), which does change it.
        await admin.play("c", "a", "c", match_id="outside")
        await admin.play("d", "b", "d", match_id="centre")
        await ws.wait_for(count_at_least(room, 2), timeout=10)
        await ws.wait_for(lambda evs: sum(e["event"] == "match:result" for e in evs) >= 2)
        later = windows(ws.events)[1:]
        assert [ids(w) for w in later] == [["a", "d", "f"]]
        assert [e["rank"] for e in later[0]["data"]["entries"]] == [3, 4, 5]
        # Subscribing later on the same socket: the current window of the new room at once.
        await ws.subscribe(["leaderboard:top:1"])
        await ws.wait_for(count_at_least("leaderboard:top:1", 1))
        assert ids(windows(ws.events, "leaderboard:top:1")[0]) == ["c"]


async def test_windows_on_long_poll(live_server: LiveServer, admin: HttpApi) -> None:
    await six_players(admin)
    token = live_server.token("viewer")
    rooms = "leaderboard:top:2,leaderboard:around:f:1,matches"
    # Without a cursor: the current windows at once.
    first = (await poll(live_server.url, rooms, token)).json()
    assert [e["rooms"][0] for e in first["events"]] == [
        "leaderboard:top:2",
        "leaderboard:around:f:1",
    ]
    assert ids(first["events"][0]) == ["a", "c"] and ids(first["events"][1]) == ["d", "f"]
    cursor = first["cursor"]
    # Nothing changed: the windows are not sent again (the poll waits its timeout out).
    idle = (await poll(live_server.url, rooms, token, cursor, timeout=1)).json()
    assert idle["events"] == []
    cursor = idle["cursor"]
    # A result touching the top window only: the poll gets its events and that window, once.
    await admin.play("e", "c", "e", match_id="m1")
    events: list[Envelope] = []
    async with asyncio.timeout(15):
        while not any(e["event"] == "match:result" for e in events):
            answer = (await poll(live_server.url, rooms, token, cursor, timeout=5)).json()
            events += answer["events"]
            cursor = answer["cursor"]
    assert [ids(w) for w in windows(events)] == [["e", "a"]]
    assert windows(events)[0]["rooms"] == ["leaderboard:top:2"]
    again = (await poll(live_server.url, rooms, token, cursor, timeout=1)).json()
    assert windows(again["events"]) == []
    # A poller waiting at the head on window rooms only is answered when its window changes.
    only = "leaderboard:around:f:1"
    head = (await poll(live_server.url, only, token)).json()["cursor"]
    polls_before = lane_requests(live_server.url)
    waiting = asyncio.create_task(poll(live_server.url, only, token, head, timeout=20))
    await lane_took(live_server.url, polls_before + 1)  # then it waits at the head
    await admin.play("f", "a", "f", match_id="m2")
    answer = (await asyncio.wait_for(waiting, 25)).json()
    assert [w["data"]["window"] for w in windows(answer["events"])] == [only]
    assert "f" in ids(windows(answer["events"])[0])


async def test_a_burst_is_coalesced_and_ends_on_the_board(
    live_server: LiveServer, admin: HttpApi
) -> None:
    players = [f"p{i:02d}" for i in range(20)]
    token = live_server.token("viewer")
    room = "leaderboard:top:10"
    matches = []
    for i in range(50):
        a, b = players[i % 20], players[(i * 7 + 3) % 20]
        if a == b:
            b = players[(i + 1) % 20]
        match = await admin.request("POST", "/api/matches", {"player_ids": [a, b]})
        await admin.request("POST", f"/api/matches/{match['match_id']}/start")
        matches.append((match["match_id"], a))
    async with SSEClient(live_server.url, f"{room},matches", token) as sse:
        await sse.wait_for(count_at_least(room, 1))
        async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
            await asyncio.gather(
                *(
                    client.post(
                        f"/api/matches/{match_id}/result",
                        json={"winner_id": winner},
                        headers=admin.headers,
                    )
                    for match_id, winner in matches
                )
            )
        await sse.wait_for(
            lambda evs: sum(e["event"] == "match:result" for e in evs) >= 50, timeout=30
        )
        expected = await board(live_server.url, token, 0, 10)

        def settled(events: list[Envelope]) -> bool:
            found = windows(events, room)
            return bool(found) and found[-1]["data"]["entries"] == expected

        await sse.wait_for(settled, timeout=5, what="a last window equal to the board")
        sent = windows(sse.events, room)[1:]
        assert 1 <= len(sent) < 50, f"{len(sent)} windows for 50 results"
        # At most one per 100 ms (their ts: when each was read; reads take microseconds
        # here, so half that is a bound no scheduling jitter on a busy machine breaks).
        gaps = [b["ts"] - a["ts"] for a, b in zip(sent, sent[1:], strict=False)]
        assert all(gap >= 50 for gap in gaps), gaps


async def test_resume_gets_a_fresh_window_first_and_nothing_replayed(
    live_server: LiveServer, admin: HttpApi
) -> None:
    await six_players(admin)
    token = live_server.token("viewer")
    room = "leaderboard:top:3"
    async with SSEClient(live_server.url, f"{room},matches", token) as sse:
        await sse.wait_for(count_at_least(room, 1))
        cursor = sse.cursor
    await admin.play("b", "a", "b", match_id="m1")  # changes the top 3 twice while away
    await admin.play("d", "c", "d", match_id="m2")
    expected = await board(live_server.url, token, 0, 3)
    async with SSEClient(live_server.url, f"{room},matches", token, last_event_id=cursor) as sse:
        await sse.wait_for(lambda evs: sum(e["event"] == "match:result" for e in evs) >= 2)
        after_open = sse.events[1]
        assert after_open["event"] == "leaderboard:window", [e["event"] for e in sse.events]
        assert after_open["data"]["entries"] == expected
        assert len(windows(sse.events)) == 1  # the two changes meanwhile: not replayed
    async with WSClient(live_server.url, token) as ws:
        await ws.subscribe([room], cursor=cursor)
        await ws.wait_for(count_at_least(room, 1))
        assert ws.events[0]["data"]["entries"] == expected


@pytest.mark.parametrize(
    "room",
    [
        "leaderboard:top:0",
        "leaderboard:top:101",
        "leaderboard:top:",
        "leaderboard:top:x",
        "leaderboard:top:010",
        "leaderboard:around:a:0",
        "leaderboard:around:a:26",
        "leaderboard:around:a",
        "leaderboard:around::3",
        "leaderboard:around:a b:3",
        "leaderboard:windows",
    ],
)
async def test_bad_window_rooms_are_400_on_every_transport(
    shared_live_server: LiveServer, room: str
) -> None:
    # Refusals only: one instance serves every room of the list (conftest.shared_live_server).
    token = shared_live_server.token("viewer")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=shared_live_server.url, timeout=10) as client:
        sse = await client.get("/api/events", params={"rooms": room}, headers=headers)
        assert sse.status_code == 400, sse.text
        polled = await client.get("/api/poll", params={"rooms": room}, headers=headers)
        assert polled.status_code == 400, polled.text
    async with WSClient(shared_live_server.url, token) as ws:
        answer = await ws.subscribe([room])
        assert answer["type"] == "error" and answer["status"] == 400


async def test_top_window_on_the_redis_engine(
    live_servers: Callable[..., LiveServer], redis_url: str
) -> None:
    server = live_servers(env={"REDIS_URL": redis_url})
    admin = HttpApi(server.url, server.token("ops", "matches:write admin"))
    await six_players(admin)
    token = server.token("viewer")
    room = "leaderboard:around:c:1"
    async with SSEClient(server.url, f"{room},leaderboard:top:2", token) as sse:
        await sse.wait_for(count_at_least(room, 1))
        assert ids(windows(sse.events, room)[0]) == ["a", "c", "e"]
        await admin.play("f", "c", "f")  # c 2 -> 4 (f 6 -> 3): both windows change
        await sse.wait_for(count_at_least(room, 2), timeout=10)
        await sse.wait_for(count_at_least("leaderboard:top:2", 2), timeout=10)
        assert ids(windows(sse.events, room)[1]) == ["f", "c", "b"]
        assert windows(sse.events, "leaderboard:top:2")[1]["data"]["entries"] == await board(
            server.url, token, 0, 2
        )


async def test_a_poller_new_to_the_instance_hears_of_the_next_change(
    live_server: LiveServer, admin: HttpApi
) -> None:
    """Its window was never read here (its cursor came from elsewhere): the change that
    follows still ends its wait, not its timeout."""
    await six_players(admin)
    token = live_server.token("viewer")
    room = "leaderboard:top:2"
    # The match is ready before the poll: the first event the instance sees after it is the
    # result itself (which changes the top 2: e 3 -> 1).
    match = await admin.request("POST", "/api/matches", {"player_ids": ["e", "a"]})
    await admin.request("POST", f"/api/matches/{match['match_id']}/start")
    cursor = (await poll(live_server.url, "matches", token)).json()["cursor"]
    got: list[Envelope] = []

    async def poll_for_window() -> None:
        position = cursor
        while not windows(got):
            answer = (await poll(live_server.url, room, token, position, timeout=25)).json()
            got.extend(answer["events"])
            position = answer["cursor"]

    polls_before = lane_requests(live_server.url)
    waiting = asyncio.create_task(poll_for_window())
    await lane_took(live_server.url, polls_before + 1)  # then it waits for a change
    await admin.request("POST", f"/api/matches/{match['match_id']}/result", {"winner_id": "e"})
    await asyncio.wait_for(waiting, 10)  # well before the poll's 25 s timeout
    assert ids(windows(got)[-1]) == ["e", "c"]
