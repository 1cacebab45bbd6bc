"""The three transports on one instance (embedded default): framing, snapshot, resume,
rooms, errors. Real server process, real HTTP."""

from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus

from ..clients import HttpApi, SSEClient, WSClient, log_events, names, poll, poll_until
from ..services import LiveServer


@pytest.fixture(name="admin")
def _admin(live_server: LiveServer) -> HttpApi:
    return HttpApi(live_server.url, live_server.token("ops", "matches:write admin"))


@pytest.fixture(name="shared_admin")
def _shared_admin(shared_live_server: LiveServer) -> HttpApi:
    """The writer on the module's shared instance (conftest.shared_servers): for tests that
    read only what they wrote after their own cursor, and count no board."""
    return HttpApi(shared_live_server.url, shared_live_server.token("ops", "matches:write admin"))


async def test_sse_stream_opens_with_retry_open_and_snapshot(
    live_server: LiveServer, admin: HttpApi
) -> None:
    await admin.play("ann", "bob", "ann")
    token = live_server.token("viewer")
    async with SSEClient(live_server.url, "leaderboard:global", token, top="1") as sse:
        await sse.wait_event("leaderboard:initial")
        assert sse.status == 200
        assert sse.content_type.startswith("text/event-stream")
        assert sse.response_headers["cache-control"] == "no-cache"
        assert sse.response_headers["x-accel-buffering"] == "no"
        assert sse.retry is not None
        assert names(sse.events[:2]) == ["stream:open", "leaderboard:initial"]
        opened, initial = sse.events[:2]
        assert opened["rooms"] == [] and opened["data"]["rooms"] == ["leaderboard:global"]
        assert initial["rooms"] == ["leaderboard:global"]
        assert initial["data"]["total"] == 2
        assert [e["player_id"] for e in initial["data"]["entries"]] == ["ann"]  # top=1
        assert initial["id"] == opened["data"]["cursor"]


async def test_a_result_reaches_every_transport_once_and_in_order(
    live_server: LiveServer, admin: HttpApi
) -> None:
    token = live_server.token("viewer")
    start = (await poll(live_server.url, "matches", token)).json()["cursor"]
    async with (
        SSEClient(live_server.url, "matches,leaderboard:global", token) as sse,
        WSClient(live_server.url, token) as ws,
    ):
        assert (await ws.subscribe(["matches", "leaderboard:global"]))["rooms"] == [
            "leaderboard:global",
            "matches",
        ]
        result = await admin.play("ann", "bob", "bob", match_id="m-1")
        expected = [
            "match:created",
            "leaderboard:update",
            "match:started",
            "match:result",
            "leaderboard:update",
        ]
        await sse.wait_for(lambda evs: len(log_events(evs)) >= 5)
        await ws.wait_for(lambda evs: len(log_events(evs)) >= 5)
        polled, _ = await poll_until(
            live_server.url, "matches,leaderboard:global", token, start, lambda evs: len(evs) >= 5
        )
        for events in (log_events(sse.events), log_events(ws.events), polled):
            assert names(events) == expected
            ids = [e["id"] for e in events]
            assert len(set(ids)) == len(ids)
        # The same envelope, byte for byte in meaning, on every transport.
        assert log_events(sse.events) == log_events(ws.events) == polled
        newcomers = log_events(sse.events)[1]["data"]
        assert newcomers["match_id"] == "m-1"
        assert [
            (c["player_id"], c["rank"], c["previous_rank"], c["delta"])
            for c in newcomers["changes"]
        ] == [("ann", 1, None, 0.0), ("bob", 2, None, 0.0)]
        final = log_events(sse.events)[3]
        assert final["data"]["rating_changes"] == result["rating_changes"]
        assert sorted(final["rooms"]) == sorted(
            ["matches", "match:m-1", "leaderboard:global", "player:ann", "player:bob"]
        )
        update = log_events(sse.events)[4]["data"]
        assert update["match_id"] == "m-1"
        assert {c["player_id"]: c["rank"] for c in update["changes"]} == {"bob": 1, "ann": 2}
        assert {c["player_id"]: c["previous_rank"] for c in update["changes"]} == {
            "ann": 1,
            "bob": 2,
        }


async def test_player_room_carries_personal_events(live_server: LiveServer, admin: HttpApi) -> None:
    async with SSEClient(live_server.url, "player:bob", live_server.token("bob")) as sse:
        await admin.play("ann", "bob", "bob")
        await sse.wait_for(lambda evs: "player:stats_update" in names(evs))
        personal = names(log_events(sse.events))
        assert personal == [
            "match:created",
            "match:started",
            "match:result",
            "leaderboard:player_rank",
            "player:stats_update",
        ]
        stats = sse.named("player:stats_update")[0]["data"]
        assert stats == {
            "player_id": "bob",
            "rating": 1216.0,
            "rank": 1,
            "wins": 1,
            "losses": 0,
            "draws": 0,
            "games": 1,
        }


@pytest.mark.parametrize("transport", ["sse", "poll", "ws"])
async def test_resume_replays_exactly_the_missed_events(
    shared_live_server: LiveServer, shared_admin: HttpApi, transport: str
) -> None:
    live_server, admin = shared_live_server, shared_admin  # counts from its own cursor
    token = live_server.token("viewer")
    async with SSEClient(live_server.url, "matches", token) as first:
        await admin.announce("matches", {"n": 0})
        await first.wait_for(lambda evs: len(log_events(evs)) == 1)
        cursor = first.cursor
    for n in range(1, 4):
        await admin.announce("matches", {"n": n})
    await admin.announce("presence", {"n": "other room"})
    want = [1, 2, 3]
    if transport == "sse":
        async with SSEClient(live_server.url, "matches", token, last_event_id=cursor) as sse:
            await sse.wait_for(lambda evs: len(log_events(evs)) >= 3)
            assert sse.events[0]["data"]["cursor"] == cursor
            got = log_events(sse.events)
    elif transport == "poll":
        got, _ = await poll_until(
            live_server.url, "matches", token, cursor, lambda evs: len(evs) >= 3
        )
    else:
        async with WSClient(live_server.url, token) as ws:
            await ws.subscribe(["matches"], cursor=cursor)
            got = log_events(await ws.wait_for(lambda evs: len(evs) >= 3))
    assert [e["data"]["n"] for e in got] == want
    # ... and then live, with no gap and no repeat at the seam.
    if transport == "sse":
        async with SSEClient(live_server.url, "matches", token, last_event_id=got[-1]["id"]) as sse:
            await admin.announce("matches", {"n": 4})
            await sse.wait_for(lambda evs: len(log_events(evs)) >= 1)
            assert [e["data"]["n"] for e in log_events(sse.events)] == [4]


@pytest.mark.parametrize("cursor", ["garbage", "deadbeef.5", "x" * 500])
async def test_bad_cursor_gives_reset_and_a_fresh_snapshot(
    shared_live_server: LiveServer, cursor: str
) -> None:
    # Reads only: one instance for the three cursors (conftest.shared_live_server).
    live_server = shared_live_server
    token = live_server.token("viewer")
    async with SSEClient(live_server.url, "leaderboard:global", token, last_event_id=cursor) as sse:
        await sse.wait_event("leaderboard:initial")
        assert names(sse.events[:3]) == ["stream:open", "stream:reset", "leaderboard:initial"]
        assert sse.events[1]["data"] == {"reason": "unknown"}
    answer = (await poll(live_server.url, "leaderboard:global", token, cursor)).json()
    assert names(answer["events"]) == ["stream:reset", "leaderboard:initial"]
    async with WSClient(live_server.url, token) as ws:
        await ws.subscribe(["leaderboard:global"], cursor=cursor)
        events = await ws.wait_for(lambda evs: len(evs) >= 2)
        assert names(events[:2]) == ["stream:reset", "leaderboard:initial"]


async def test_expired_cursor_gives_reset_expired(live_servers) -> None:  # type: ignore[no-untyped-def]
    server = live_servers(env={"EVENT_LOG_SIZE": "100"})
    admin = HttpApi(server.url, server.token("ops", "admin"))
    token = server.token("viewer")
    first = await admin.announce("matches", {"n": 0})
    await admin.announce_many("matches", [{"n": n} for n in range(150)])  # (one connection)
    async with SSEClient(server.url, "matches", token, last_event_id=first) as sse:
        await sse.wait_event("stream:reset")
        assert sse.named("stream:reset")[0]["data"] == {"reason": "expired"}
        await admin.announce("matches", {"n": "live"})
        await sse.wait_for(lambda evs: any(e["data"].get("n") == "live" for e in log_events(evs)))
        assert [e["data"]["n"] for e in log_events(sse.events)] == ["live"]


async def test_unknown_and_private_rooms_are_refused_on_every_transport(
    shared_live_server: LiveServer,
) -> None:
    live_server = shared_live_server  # refusals and reads only: one instance for the module
    token = live_server.token("ann")
    for rooms, status in (("nope", 400), ("player:bob", 403), ("match:", 400), ("", 400)):
        async with SSEClient(live_server.url, rooms, token) as sse:
            assert sse.status == status, rooms
            assert sse.content_type == "application/problem+json"
        assert (await poll(live_server.url, rooms, token)).status_code == status
        if rooms:
            async with WSClient(live_server.url, token) as ws:
                answer = await ws.subscribe([rooms])
                assert answer == {"type": "error", "status": status, "title": answer["title"]}
    # One's own room is fine; an admin may read anyone's.
    async with SSEClient(live_server.url, "player:ann", token) as sse:
        assert sse.status == 200
    async with SSEClient(live_server.url, "player:ann", live_server.token("root", "admin")) as sse:
        assert sse.status == 200


async def test_private_room_refused_on_resume_too(shared_live_server: LiveServer) -> None:
    live_server = shared_live_server  # refusals and reads only: one instance for the module
    mine = live_server.token("ann")
    async with SSEClient(live_server.url, "player:ann", mine) as sse:
        await sse.wait_event("stream:open")
        cursor = sse.cursor
    other = live_server.token("bob")
    async with SSEClient(live_server.url, "player:ann", other, last_event_id=cursor) as sse:
        assert sse.status == 403
    assert (await poll(live_server.url, "player:ann", other, cursor)).status_code == 403


async def test_missing_or_bad_token_is_401(shared_live_server: LiveServer) -> None:
    live_server = shared_live_server  # refusals only: one instance for the module
    for token in (None, "not-a-token"):
        async with SSEClient(live_server.url, "matches", token) as sse:
            assert sse.status == 401
            assert sse.response_headers["www-authenticate"] == "Bearer"


async def test_subscribe_and_unsubscribe_an_open_stream(
    shared_live_server: LiveServer, shared_admin: HttpApi
) -> None:
    live_server, admin = shared_live_server, shared_admin  # a stream of its own, from the head
    token = live_server.token("ann")
    mine = HttpApi(live_server.url, token)
    async with SSEClient(live_server.url, "presence", token) as sse:
        await sse.wait_event("stream:open")
        answer = await mine.request(
            "POST", "/api/subscribe", {"connection_id": sse.connection_id, "rooms": ["matches"]}
        )
        assert answer == {"rooms": ["matches", "presence"]}
        await admin.announce("matches", {"n": 1})
        await sse.wait_for(lambda evs: any(e["event"] == "announcement" for e in evs))
        answer = await mine.request(
            "POST", "/api/unsubscribe", {"connection_id": sse.connection_id, "rooms": ["matches"]}
        )
        assert answer == {"rooms": ["presence"]}
        await admin.announce("matches", {"n": 2})
        await admin.announce("presence", {"n": 3})
        await sse.wait_for(lambda evs: any(e["data"].get("n") == 3 for e in evs))
        assert [e["data"]["n"] for e in sse.named("announcement")] == [1, 3]
        # Joining the board brings its snapshot.
        await mine.request(
            "POST",
            "/api/subscribe",
            {"connection_id": sse.connection_id, "rooms": ["leaderboard:global"]},
        )
        await sse.wait_event("leaderboard:initial")
        # Someone else cannot touch the stream; an unknown one is 404.
        other = HttpApi(live_server.url, live_server.token("bob"))
        await other.request(
            "POST",
            "/api/subscribe",
            {"connection_id": sse.connection_id, "rooms": ["matches"]},
            expect=403,
        )
        await mine.request(
            "POST", "/api/subscribe", {"connection_id": "nope-1", "rooms": ["matches"]}, expect=404
        )


async def test_websocket_frames_errors_and_ping(shared_live_server: LiveServer) -> None:
    live_server = shared_live_server  # a socket of its own
    async with WSClient(live_server.url, live_server.token("ann")) as ws:
        await ws.send({"type": "ping"})
        assert await ws.recv() == {"type": "pong"}
        await ws.send({"type": "dance"})
        assert (await ws.recv())["status"] == 400
        await ws.send({"type": "subscribe", "rooms": "matches"})
        assert (await ws.recv())["status"] == 422
        await ws.send({"type": "ping"})  # still open after bad frames
        assert await ws.recv() == {"type": "pong"}
        await ws.send("{not json")
        with pytest.raises(Exception) as closed:
            await ws.recv()
        assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 1003


async def test_websocket_oversized_frame_closes_with_1009(shared_live_server: LiveServer) -> None:
    live_server = shared_live_server  # a socket of its own
    async with WSClient(live_server.url, live_server.token("ann")) as ws:
        await ws.send({"type": "ping", "pad": "x" * (70 * 1024)})
        with pytest.raises(Exception) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 1009  # type: ignore[attr-defined]


async def test_websocket_origin_check(shared_servers) -> None:  # type: ignore[no-untyped-def]
    server = shared_servers()  # handshakes only
    token = server.token("ann")
    with pytest.raises(InvalidStatus) as refused:
        async with WSClient(server.url, token, origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    async with WSClient(server.url, token, origin=server.url) as ws:  # its own origin
        assert (await ws.subscribe(["matches"]))["type"] == "subscribed"
    async with WSClient(server.url, token) as ws:  # no Origin: a non-browser client
        assert (await ws.subscribe(["matches"]))["type"] == "subscribed"
    allowed = shared_servers(env={"CORS_ORIGINS": "https://game.example"})
    async with WSClient(allowed.url, allowed.token("ann"), origin="https://game.example") as ws:
        assert (await ws.subscribe(["matches"]))["type"] == "subscribed"
    with pytest.raises(InvalidStatus) as refused:
        async with WSClient(allowed.url, allowed.token("ann"), origin=allowed.url):
            pass
    assert refused.value.response.status_code == 403


async def test_stream_events_carry_the_position_they_reflect(
    shared_live_server: LiveServer, shared_admin: HttpApi
) -> None:
    """An EventSource that reconnects on its own right after stream:open (or a reset) sends
    that event's id as Last-Event-ID: it must lose nothing."""
    live_server, admin = shared_live_server, shared_admin  # counts from its own cursor
    token = live_server.token("viewer")
    cursor = await admin.announce("matches", {"n": 0})
    for n in range(1, 4):
        await admin.announce("matches", {"n": n})
    async with SSEClient(live_server.url, "matches", token, last_event_id=cursor) as sse:
        await sse.wait_for(lambda evs: len(log_events(evs)) == 3)
        assert sse.events[0]["event"] == "stream:open"
        assert sse.events[0]["id"] == sse.events[0]["data"]["cursor"] == cursor
    async with SSEClient(live_server.url, "matches", token, last_event_id="junk") as sse:
        reset = await sse.wait_event("stream:reset")
        await admin.announce("matches", {"n": 4})
        await sse.wait_for(lambda evs: len(log_events(evs)) == 1)
    async with SSEClient(live_server.url, "matches", token, last_event_id=reset["id"]) as again:
        await again.wait_for(lambda evs: len(log_events(evs)) == 1)
        assert [e["data"]["n"] for e in log_events(again.events)] == [4]


async def test_idle_streams_get_a_ping_each_heartbeat_and_stay_open(live_servers) -> None:  # type: ignore[no-untyped-def]
    server = live_servers(env={"HEARTBEAT_SECONDS": "2"})
    admin = HttpApi(server.url, server.token("ops", "admin"))
    async with SSEClient(server.url, "matches", server.token("viewer")) as sse:
        await sse.wait_for(lambda evs: sse.pings >= 2, timeout=8, what="two pings")
        assert not sse.ended.is_set()
        await admin.announce("matches", {"n": 1})  # still live after the quiet spell
        await sse.wait_event("announcement")
