"""Start-up at scale (issue 8): a memory-engine instance is ready while its board loads from
SQL. Meanwhile reads come from SQL, and a result is held until the board is whole, so the
ranks it carries are ranks on the whole board (not lost, not ranked on a partial board)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from quart_app.store import rebuild as rebuild_module
from quart_app.store.board_reads import around, page, player
from quart_app.store.database import Store
from quart_app.store.seed import seed_players

from ..helpers import board_matches_sql, eventually, log_events, seed_sqlite, serving, sql_players

PLAYERS = 3000


def sql_ranks(rows: dict[str, dict[str, Any]]) -> dict[str, int]:
    ordered = sorted(rows.values(), key=lambda row: (-row["rating"], row["player_id"]))
    return {row["player_id"]: rank for rank, row in enumerate(ordered, 1)}


@pytest.fixture(name="load_gate")
def _load_gate(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Holds every board load after it read SQL (where a load at 1,000,000 players spends
    its seconds sorting) until the test opens the gate."""
    gate = asyncio.Event()
    read = rebuild_module._snapshot

    async def read_then_wait(store: Store) -> Any:
        rows = await read(store)
        await gate.wait()
        return rows

    monkeypatch.setattr(rebuild_module, "_snapshot", read_then_wait)
    return gate


async def seed(tmp_path: Path) -> None:
    await seed_sqlite(f"sqlite:///{tmp_path}/pulse.db", PLAYERS)  # the file make_app serves


async def test_ready_while_the_board_loads_and_a_result_meanwhile_is_ranked_on_the_whole_board(
    make_app: Callable[..., Quart], tmp_path: Path, load_gate: asyncio.Event
) -> None:
    await seed(tmp_path)
    async with serving(make_app(), settled=False) as api:  # the load is held open
        assert (await api.get("/readyz", token=None)).status == 200

        # reads while loading: the board from SQL, whole and in order
        top = (await api.get("/api/leaderboard?limit=5")).body
        expected, total = await page(api.rt.store, 0, 5)
        assert total == PLAYERS and top["total"] == PLAYERS
        assert [(e["rank"], e["player_id"]) for e in top["entries"]] == [
            (rank, entry.player_id) for rank, entry in expected
        ]
        before = sql_ranks(await sql_players(api.rt.store))
        by_rank = {rank: player for player, rank in before.items()}
        low, high = by_rank[2000], by_rank[1990]  # the winner climbs past the loser
        reply = await api.get(f"/api/players/{low}")
        assert reply.status == 200 and reply.body["rank"] == before[low]

        # a result while loading: answered, and published once the board is whole
        await api.play("during-load", low, high, low)
        after = sql_ranks(await sql_players(api.rt.store))
        assert after[low] < before[low]
        assert not [e for e in await log_events(api.rt.engine) if e["event"] != "match:created"]

        load_gate.set()
        await eventually(lambda: board_matches_sql(api.rt), 30, "the board to equal SQL")

        async def the_update() -> list[dict[str, Any]]:
            events = await log_events(api.rt.engine)
            return [e for e in events if e["event"] == "leaderboard:update"]

        await eventually(the_update, 10, "the result's leaderboard:update")
        (update,) = await the_update()
        carried = {row["player_id"]: row for row in update["data"]["changes"]}
        for player in (low, high):
            assert carried[player]["rank"] == after[player]
            assert carried[player]["previous_rank"] == before[player]
        reply = await api.get(f"/api/players/{low}")
        assert reply.body["rank"] == after[low]


async def test_sql_board_reads_rank_like_the_board(database_url: str) -> None:
    """What is served while the board loads, on SQLite and PostgreSQL: ranks by rating
    descending, ties by id (the seeded ratings have many ties)."""
    store = Store(database_url)
    await store.connect(migrate=True)
    try:
        await seed_players(store, PLAYERS)
        ranks = sql_ranks(await sql_players(store))
        by_rank = {rank: player for player, rank in ranks.items()}
        for rank in (1, 2, 1500, PLAYERS - 1, PLAYERS):
            found = await player(store, by_rank[rank])
            assert found is not None and found[0] == rank
        window = await around(store, by_rank[1500], 3)
        assert [(r, e.player_id) for r, e in window] == [(r, by_rank[r]) for r in range(1497, 1504)]
    finally:
        await store.disconnect()
