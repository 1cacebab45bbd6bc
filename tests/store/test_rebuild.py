"""rebuild(): the board comes back from SQL, identical, also while results keep coming."""

from __future__ import annotations

import asyncio

import pytest

from quart_app.engine.base import BoardEntry
from quart_app.store.rebuild import rebuild

from ..helpers import Api, board, board_matches_sql, eventually


async def nothing() -> list[BoardEntry]:
    return []


async def wipe_board(api: Api, engine_kind: str, request: pytest.FixtureRequest) -> None:
    """Lose the derived board: the Redis keys deleted, or the memory engine emptied."""
    if engine_kind == "redis":
        server = request.getfixturevalue("redis_server")
        prefix = api.rt.settings.redis_prefix
        server.cli("DEL", f"{prefix}board", f"{prefix}players", f"{prefix}versions")
    else:
        await api.rt.engine.board_replace(nothing)


async def seed(api: Api) -> None:
    for number, (a, b, winner) in enumerate(
        [("a", "b", "a"), ("c", "d", None), ("a", "c", "c"), ("e", "b", "e"), ("f", "g", None)]
    ):
        await api.play(f"m{number}", a, b, winner)
    await api.put("/api/players/d", {"name": "Dee"}, token="admin")


async def test_rebuild_restores_an_identical_board(
    api: Api, engine_kind: str, request: pytest.FixtureRequest
) -> None:
    await seed(api)
    before = await board(api.rt.engine)
    page = (await api.get("/api/leaderboard")).body["entries"]
    assert len(before) == 7

    await wipe_board(api, engine_kind, request)
    assert (await api.get("/api/leaderboard")).body["total"] == 0
    assert (await api.get("/api/players/a")).status == 404

    assert await rebuild(api.rt.store, api.rt.engine, api.rt.relay) == 7
    assert await board(api.rt.engine) == before
    assert (await api.get("/api/leaderboard")).body["entries"] == page
    assert (await api.get("/api/players/d")).body["name"] == "Dee"
    # rebuilding a board that is fine changes nothing
    assert await rebuild(api.rt.store, api.rt.engine, api.rt.relay) == 7
    assert await board(api.rt.engine) == before


async def test_rebuild_while_results_come_in(api: Api) -> None:
    players = [f"p{i}" for i in range(8)]
    pairs = [(players[i % 8], players[(i * 3 + 1) % 8]) for i in range(40)]
    pairs = [(a, b) for a, b in pairs if a != b]
    for number, (a, b) in enumerate(pairs):
        await api.create(f"m{number}", a, b)

    async def results() -> None:
        for number, (a, _) in enumerate(pairs):
            await api.result(f"m{number}", a)

    async def rebuilds() -> None:
        for _ in range(5):
            await rebuild(api.rt.store, api.rt.engine, api.rt.relay)
            await asyncio.sleep(0)

    await asyncio.gather(results(), rebuilds())
    await eventually(lambda: board_matches_sql(api.rt), 5, "the board to equal SQL")
