"""Rebuild the engine's board from SQL without a moment where readers see an empty board."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import sqlalchemy as sa

from ..domain.publication import Publication
from ..engine.base import Engine
from ..engine.board_state import BoardRow, BoardRows, rebuilt_marker
from .database import Store, _unavailable_when_lost
from .outbox import Relay

# Columns in BoardRow order (sort key first), unordered: the engine sorts in Python, by the
# board's own order (no collation question), faster than SQL's ORDER BY here (measured 7.0 s
# vs 2.1 s for the unordered read at 1,000,000 players on SQLite, before any sort).
_BOARD_ROWS = "SELECT -rating, player_id, name, wins, losses, draws, games, version FROM players"


def _read_sqlite(path: str) -> list[BoardRow]:
    # One SELECT is one read transaction: a consistent snapshot, also under WAL writers.
    conn = sqlite3.connect(path)
    try:
        rows: list[BoardRow] = conn.execute(_BOARD_ROWS).fetchall()
        return rows
    finally:
        conn.close()


async def _snapshot(store: Store) -> BoardRows:
    """Every player's board row, as the driver returns it: `databases` builds a Record per
    row through SQLAlchemy's result processing, which at 100,000 players took seconds
    (measured 9 s on this machine) of a start-up. SQLite is read on a connection of its own
    in a worker thread: the 2 s read of 1,000,000 rows on the store's connection queued
    /readyz and every SQL read behind it while the board loaded. PostgreSQL is read through
    asyncpg (not blocking the loop); its Records become tuples."""
    with _unavailable_when_lost():
        if store.is_sqlite:
            path = sa.engine.make_url(store.url).database or ""
            return BoardRows(await asyncio.to_thread(_read_sqlite, path))
        async with store.db.connection() as conn:
            raw: Any = conn.raw_connection
            return BoardRows([tuple(record) for record in await raw.fetch(_BOARD_ROWS)])


async def rebuild(
    store: Store, engine: Engine, relay: Relay, *, take_over: bool = True
) -> int | None:
    """Swap in the board built from SQL (the engine starts collecting rows published
    meanwhile before SQL is read, so none is lost), publish what the outbox still holds,
    then append the `board:rebuilt` marker: every instance's hub answers it with a fresh
    `leaderboard:initial` for its board watchers. Returns the number of players, or None
    when another instance's rebuild is running and `take_over` is false (nothing done).

    The outbox is published after the swap, not before: its rows are ranked on the whole
    board, and a memory engine still loading its first board holds such publications until
    the board is in (a flush before the load would wait on the load)."""
    count = 0

    async def load() -> BoardRows:
        nonlocal count
        rows = await _snapshot(store)
        count = len(rows)
        return rows

    if not await engine.board_replace(load, take_over=take_over):
        return None
    await relay.flush()
    await engine.publish(Publication(events=(rebuilt_marker(),)))
    return count
