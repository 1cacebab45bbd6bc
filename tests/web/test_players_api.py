"""Reads of the board (page, player, around) and renames, on both engines."""

from __future__ import annotations

from ..helpers import Api, assert_problem, board_matches_sql, sql_players

# Ratings after these matches (K=32), all from 1200:
#   a beats b: a 1216, b 1184;  c beats d: c 1216, d 1184;  e, f untouched at 1200;
#   a beats c (equal 1216s): a 1232, c 1200.
# The board: a 1232; then c, e, f tied at 1200 (ordered by id); then b, d tied at 1184.
BOARD = [("a", 1232.0), ("c", 1200.0), ("e", 1200.0), ("f", 1200.0), ("b", 1184.0), ("d", 1184.0)]


async def seed(api: Api) -> None:
    await api.play("m1", "a", "b", "a")
    await api.play("m2", "c", "d", "c")
    await api.create("m3", "e", "f")
    await api.play("m4", "a", "c", "a")


def view(entries: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(e["rank"], e["player_id"], e["rating"]) for e in entries]


RANKED = [(rank, pid, rating) for rank, (pid, rating) in enumerate(BOARD, 1)]


async def test_leaderboard_pages(api: Api) -> None:
    await seed(api)
    reply = await api.get("/api/leaderboard")
    assert reply.status == 200
    assert reply.body["total"] == 6
    assert view(reply.body["entries"]) == RANKED
    a = reply.body["entries"][0]
    assert a == {
        "rank": 1,
        "player_id": "a",
        "name": "a",
        "rating": 1232.0,
        "wins": 2,
        "losses": 0,
        "draws": 0,
    }
    assert isinstance(reply.body["cursor"], str) and reply.body["cursor"]

    for offset, limit in ((0, 2), (2, 2), (4, 2), (5, 10), (6, 1), (100, 5)):
        reply = await api.get(f"/api/leaderboard?offset={offset}&limit={limit}")
        assert reply.status == 200
        assert reply.body["total"] == 6
        assert view(reply.body["entries"]) == RANKED[offset : offset + limit]

    for query in ("limit=0", "limit=1001", "offset=-1", "limit=abc", "offset=1.5"):
        assert_problem(await api.get(f"/api/leaderboard?{query}"), 400)
    assert await board_matches_sql(api.rt)


async def test_leaderboard_cursor_is_the_log_position_of_the_page(api: Api) -> None:
    await seed(api)
    published = await api.post(
        "/api/publish",
        {"room": "matches", "event": "announcement", "data": {"hi": 1}},
        token="admin",
    )
    assert published.status == 202
    # Nothing happened after the announcement: the page reflects the log up to it.
    assert (await api.get("/api/leaderboard")).body["cursor"] == published.body["id"]


async def test_player(api: Api) -> None:
    await seed(api)
    reply = await api.get("/api/players/c")
    assert reply.status == 200
    assert reply.body == {
        "rank": 2,
        "player_id": "c",
        "name": "c",
        "rating": 1200.0,
        "wins": 1,
        "losses": 1,
        "draws": 0,
        "games": 2,
        "online": False,
    }
    assert (await api.get("/api/players/d")).body["rank"] == 6
    assert_problem(await api.get("/api/players/zed"), 404)
    assert_problem(await api.get("/api/players/no%20such%20id"), 404)


async def test_around(api: Api) -> None:
    await seed(api)

    async def around(player_id: str, radius: int | None = None) -> list[tuple[object, ...]]:
        query = "" if radius is None else f"?radius={radius}"
        reply = await api.get(f"/api/players/{player_id}/around{query}")
        assert reply.status == 200, reply
        return view(reply.body["entries"])

    assert await around("e", 1) == RANKED[1:4]
    assert await around("e", 0) == RANKED[2:3]
    assert await around("a", 2) == RANKED[0:3]  # the top edge: nothing above
    assert await around("d", 2) == RANKED[3:6]  # the bottom edge: nothing below
    assert await around("f") == RANKED  # radius 5 by default
    assert await around("b", 100) == RANKED
    assert_problem(await api.get("/api/players/zed/around"), 404)
    for radius in ("-1", "101", "x"):
        assert_problem(await api.get(f"/api/players/a/around?radius={radius}"), 400)


async def test_rename(api: Api) -> None:
    await seed(api)
    # the player itself, with no scope at all
    reply = await api.put("/api/players/c", {"name": "  Carol  "}, token=api.token("c"))
    assert reply.status == 200, reply
    assert (reply.body["name"], reply.body["rating"], reply.body["rank"]) == ("Carol", 1200.0, 2)
    # an admin
    reply = await api.put("/api/players/d", {"name": "Dee ♥"}, token="admin")
    assert (reply.status, reply.body["name"]) == (200, "Dee ♥")
    # anybody else: 403, even a writer; no token: 401
    for token in (api.token("d"), api.writer):
        assert_problem(await api.put("/api/players/c", {"name": "Mallory"}, token=token), 403)
    reply = await api.put("/api/players/c", {"name": "Mallory"}, token=None)
    assert_problem(reply, 401)
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    # bad names, unknown players
    for name in ("", "   ", "x" * 65, 7):
        assert_problem(await api.put("/api/players/c", {"name": name}, token="admin"), 422)
    assert_problem(await api.put("/api/players/zed", {"name": "Z"}, token="admin"), 404)

    entries = (await api.get("/api/leaderboard")).body["entries"]
    assert {e["player_id"]: e["name"] for e in entries} == {
        "a": "a",
        "b": "b",
        "c": "Carol",
        "d": "Dee ♥",
        "e": "e",
        "f": "f",
    }
    assert view(entries) == RANKED  # a rename moves nobody
    assert (await sql_players(api.rt.store))["c"]["name"] == "Carol"
    assert await board_matches_sql(api.rt)


async def test_presence_count_without_connections(api: Api) -> None:
    reply = await api.get("/api/presence")
    assert (reply.status, reply.body) == (200, {"online_count": 0})
