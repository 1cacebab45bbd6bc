"""The match lifecycle through HTTP (PROTOCOL section 4), on both engines and both databases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import Quart

from quart_app.domain import elo
from quart_app.engine.base import Engine

from ..helpers import Api, assert_problem, board, serving, sql_matches


async def events_after(engine: Engine, seq: int) -> list[dict[str, Any]]:
    import json

    return [json.loads(event.text) for event in await engine.read_after(seq, 1000)]


def names(events: list[dict[str, Any]]) -> list[str]:
    return [event["event"] for event in events]


MATCH_ROOMS = ["matches", "match:m1", "player:alice", "player:bob"]


async def test_match_lifecycle(
    make_app: Callable[..., Quart], engine_url: str | None, database_url: str
) -> None:
    async with serving(make_app(redis_url=engine_url, database_url=database_url)) as api:
        engine = api.rt.engine

        # create: 201 and match:created to the match's rooms and both players' rooms
        head = await engine.head()
        reply = await api.post("/api/matches", {"match_id": "m1", "player_ids": ["alice", "bob"]})
        assert reply.status == 201, reply
        created = reply.body
        assert created["match_id"] == "m1"
        assert created["player_ids"] == ["alice", "bob"]
        assert created["status"] == "scheduled"
        assert created["winner_id"] is None and created["draw"] is False
        assert created["created_at"].endswith("Z")
        assert created["started_at"] is None and created["completed_at"] is None
        event, newcomers = await events_after(engine, head)
        assert (event["event"], event["rooms"], event["data"]) == (
            "match:created",
            MATCH_ROOMS,
            created,
        )
        # both are new: they join the board, announced to its watchers
        assert (newcomers["event"], newcomers["rooms"]) == (
            "leaderboard:update",
            ["leaderboard:global"],
        )
        assert newcomers["data"] == {
            "match_id": "m1",
            "changes": [
                {
                    "rank": 1,
                    "player_id": "alice",
                    "name": "alice",
                    "rating": 1200.0,
                    "wins": 0,
                    "losses": 0,
                    "draws": 0,
                    "previous_rank": None,
                    "delta": 0.0,
                    "version": 1,
                },
                {
                    "rank": 2,
                    "player_id": "bob",
                    "name": "bob",
                    "rating": 1200.0,
                    "wins": 0,
                    "losses": 0,
                    "draws": 0,
                    "previous_rank": None,
                    "delta": 0.0,
                    "version": 1,
                },
            ],
        }

        # the same id and players again (in either order): 200 with the stored match, no event
        head = await engine.head()
        for player_ids in (["alice", "bob"], ["bob", "alice"]):
            reply = await api.post("/api/matches", {"match_id": "m1", "player_ids": player_ids})
            assert (reply.status, reply.body) == (200, created)
        # other players: 409; the same player twice: 422 with the validation errors
        reply = await api.post("/api/matches", {"match_id": "m1", "player_ids": ["alice", "carol"]})
        assert_problem(reply, 409)
        reply = await api.post("/api/matches", {"match_id": "m9", "player_ids": ["alice", "alice"]})
        assert_problem(reply, 422)
        assert reply.body["errors"]
        assert await engine.head() == head
        assert set(await sql_matches(api.rt.store)) == {"m1"}

        # players appear on their first match, at 1200, named by their id
        for player_id in ("alice", "bob"):
            reply = await api.get(f"/api/players/{player_id}")
            assert reply.status == 200
            assert reply.body == {
                "rank": reply.body["rank"],
                "player_id": player_id,
                "name": player_id,
                "rating": 1200.0,
                "wins": 0,
                "losses": 0,
                "draws": 0,
                "games": 0,
                "online": False,
            }
        assert_problem(await api.get("/api/players/carol"), 404)

        # progress is for live matches only
        assert_problem(await api.post("/api/matches/m1/progress", {"score": {"alice": 1}}), 409)

        # start: 200 live, match:started; progress: 202 and match:progress
        reply = await api.post("/api/matches/m1/start")
        assert reply.status == 200
        started = reply.body
        assert started["status"] == "live" and started["started_at"].endswith("Z")
        assert started["created_at"] == created["created_at"]
        reply = await api.post(
            "/api/matches/m1/progress", {"score": {"alice": 3, "bob": 1}, "detail": {"round": 4}}
        )
        assert reply.status == 202
        progress = (await events_after(engine, head))[-1]
        assert progress["id"] == reply.body["id"]
        assert progress["event"] == "match:progress" and progress["rooms"] == MATCH_ROOMS
        assert progress["data"] == {
            "match_id": "m1",
            "score": {"alice": 3, "bob": 1},
            "detail": {"round": 4},
        }
        assert names(await events_after(engine, head)) == ["match:started", "match:progress"]

        # result: the winner gains 16 (equal ratings, K=32), both players are told
        head = await engine.head()
        reply = await api.post("/api/matches/m1/result", {"winner_id": "alice"})
        assert reply.status == 200, reply
        result = reply.body
        assert result["status"] == "completed" and result["winner_id"] == "alice"
        assert result["draw"] is False and result["completed_at"].endswith("Z")
        assert result["started_at"] == started["started_at"]
        assert result["rating_changes"] == {"alice": 16.0, "bob": -16.0}
        events = await events_after(engine, head)
        assert sorted(names(events)) == sorted(
            [
                "match:result",
                "leaderboard:update",
                "leaderboard:player_rank",
                "leaderboard:player_rank",
                "player:stats_update",
                "player:stats_update",
            ]
        )
        by_name = {event["event"]: event for event in events}
        assert by_name["match:result"]["data"] == result
        assert set(by_name["match:result"]["rooms"]) == {*MATCH_ROOMS, "leaderboard:global"}
        update = by_name["leaderboard:update"]["data"]
        assert update["match_id"] == "m1"
        assert {
            (c["player_id"], c["rating"], c["delta"], c["rank"]) for c in update["changes"]
        } == {("alice", 1216.0, 16.0, 1), ("bob", 1184.0, -16.0, 2)}
        personal = {
            (e["event"], e["rooms"][0], e["data"]["rating"])
            for e in events
            if e["event"].startswith(("leaderboard:player", "player:"))
        }
        assert personal == {
            ("leaderboard:player_rank", "player:alice", 1216.0),
            ("leaderboard:player_rank", "player:bob", 1184.0),
            ("player:stats_update", "player:alice", 1216.0),
            ("player:stats_update", "player:bob", 1184.0),
        }

        # the same result again: the same body, nothing new; another result or a cancel: 409
        head = await engine.head()
        reply = await api.post("/api/matches/m1/result", {"winner_id": "alice"})
        assert (reply.status, reply.body) == (200, result)
        for outcome in ({"winner_id": "bob"}, {"draw": True}):
            assert_problem(await api.post("/api/matches/m1/result", outcome), 409)
        assert_problem(await api.post("/api/matches/m1/cancel"), 409)
        assert await engine.head() == head

        # reads: the match with its result, the board, each player
        reply = await api.get("/api/matches/m1")
        assert (reply.status, reply.body) == (200, result)
        reply = await api.get("/api/leaderboard")
        assert [
            (e["rank"], e["player_id"], e["rating"], e["wins"], e["losses"])
            for e in reply.body["entries"]
        ] == [(1, "alice", 1216.0, 1, 0), (2, "bob", 1184.0, 0, 1)]
        reply = await api.get("/api/players/bob")
        assert (reply.body["rank"], reply.body["rating"], reply.body["games"]) == (2, 1184.0, 1)

        # a draw straight from scheduled: the favourite loses what the underdog gains
        await api.create("m2", "carol", "alice")
        reply = await api.post("/api/matches/m2/result", {"draw": True})
        assert reply.status == 200
        carol, alice, delta = elo.apply_result(1200.0, 1216.0, 0.5, 32)
        assert delta > 0
        assert reply.body["draw"] is True and reply.body["winner_id"] is None
        assert reply.body["rating_changes"] == {"carol": delta, "alice": -delta}
        reply = await api.get("/api/players/alice")
        assert (reply.body["rating"], reply.body["draws"], reply.body["games"]) == (alice, 1, 2)
        assert (await api.get("/api/players/carol")).body["rating"] == carol

        # cancel: 200 and match:cancelled; again: 200, the same match, no event
        await api.create("m3", "bob", "carol")
        head = await engine.head()
        reply = await api.post("/api/matches/m3/cancel")
        assert reply.status == 200 and reply.body["status"] == "cancelled"
        cancelled = reply.body
        [event] = await events_after(engine, head)
        assert (event["event"], event["data"]) == ("match:cancelled", cancelled)
        head = await engine.head()
        reply = await api.post("/api/matches/m3/cancel")
        assert (reply.status, reply.body) == (200, cancelled)
        assert await engine.head() == head

        # unknown matches
        for path in ("/api/matches/nope/start", "/api/matches/nope/cancel"):
            assert_problem(await api.post(path), 404)
        assert_problem(await api.post("/api/matches/nope/result", {"draw": True}), 404)
        assert_problem(await api.get("/api/matches/nope"), 404)


async def test_a_match_without_id_gets_one(api: Api) -> None:
    reply = await api.post("/api/matches", {"player_ids": ["p1", "p2"]})
    assert reply.status == 201
    match_id = reply.body["match_id"]
    assert match_id and (await api.get(f"/api/matches/{match_id}")).body == reply.body
    reply = await api.post(f"/api/matches/{match_id}/result", {"winner_id": "p2"})
    assert reply.body["rating_changes"] == {"p1": -16.0, "p2": 16.0}


async def test_the_winner_must_play_in_the_match(api: Api) -> None:
    await api.create("m1", "p1", "p2")
    assert_problem(await api.post("/api/matches/m1/result", {"winner_id": "p3"}), 422)
    assert (await api.get("/api/matches/m1")).body["status"] == "scheduled"
    [(_, p1), (_, p2)] = await board(api.rt.engine)
    assert (p1.rating, p2.rating) == (1200.0, 1200.0)


# The state machine: every transition from every state; a repeated transition is 200 and
# emits nothing; everything else that is not allowed is 409 and changes nothing.
TRANSITIONS: list[tuple[str, str, int, bool]] = [
    # (state, action, status, emits)
    ("scheduled", "start", 200, True),
    ("scheduled", "win", 200, True),
    ("scheduled", "draw", 200, True),
    ("scheduled", "cancel", 200, True),
    ("scheduled", "progress", 409, False),
    ("live", "start", 200, False),
    ("live", "win", 200, True),
    ("live", "draw", 200, True),
    ("live", "cancel", 200, True),
    ("live", "progress", 202, True),
    ("completed", "start", 409, False),
    ("completed", "win", 200, False),  # the same result again
    ("completed", "lose", 409, False),
    ("completed", "draw", 409, False),
    ("completed", "cancel", 409, False),
    ("completed", "progress", 409, False),
    ("cancelled", "start", 409, False),
    ("cancelled", "win", 409, False),
    ("cancelled", "draw", 409, False),
    ("cancelled", "cancel", 200, False),
    ("cancelled", "progress", 409, False),
]


async def act(api: Api, match_id: str, action: str) -> int:
    path = f"/api/matches/{match_id}"
    reply = {
        "start": lambda: api.post(f"{path}/start"),
        "cancel": lambda: api.post(f"{path}/cancel"),
        "win": lambda: api.post(f"{path}/result", {"winner_id": "x"}),
        "lose": lambda: api.post(f"{path}/result", {"winner_id": "y"}),
        "draw": lambda: api.post(f"{path}/result", {"draw": True}),
        "progress": lambda: api.post(f"{path}/progress", {"score": {"x": 1, "y": 0}}),
    }[action]
    answer = await reply()
    if answer.status >= 400:
        assert_problem(answer, answer.status)
    return answer.status


async def test_every_transition_of_the_state_machine(api: Api) -> None:
    into = {"scheduled": [], "live": ["start"], "completed": ["win"], "cancelled": ["cancel"]}
    failures = []
    for number, (state, action, status, emits) in enumerate(TRANSITIONS):
        match_id = f"t{number}"
        reply = await api.post("/api/matches", {"match_id": match_id, "player_ids": ["x", "y"]})
        assert reply.status == 201
        for step in into[state]:
            assert await act(api, match_id, step) < 300
        before = ((await sql_matches(api.rt.store))[match_id], await board(api.rt.engine))
        head = await api.rt.engine.head()
        got = await act(api, match_id, action)
        after = ((await sql_matches(api.rt.store))[match_id], await board(api.rt.engine))
        emitted = await api.rt.engine.head() != head
        if got != status or emitted != emits or (not emits and after != before):
            failures.append((state, action, got, emitted))
    assert failures == []
