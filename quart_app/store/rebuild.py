"""Rebuild the engine's board from SQL without a moment where readers see an empty board."""

from __future__ import annotations

from typing import Any

from ..domain.publication import Publication
from ..engine.base import Engine
from ..engine.board_state import BoardRow, BoardRows, rebuilt_marker
from .database import Store, _unavailable_when_lost
from .outbox import Relay

# Columns in BoardRow order (sort key first), unordered: the engine sorts in Python, by the
# board's own order (no collation question), faster than SQL's ORDER BY here (measured 7.0 s
# vs 2.1 s for the unordered read at 1,000,000 players on SQLite, before any sort).
_BOARD_ROWS = "SELECT -rating, player_id, name, wins, losses, draws, games, version FROM players"


async def _snapshot(store: Store) -> BoardRows:
    """Every player's board row, as the driver returns it. Read through the driver's own
    connection (aiosqlite, asyncpg): `databases` builds a Record per row through
    SQLAlchemy's result processing, which at 100,000 players took seconds (measured 9 s on
    this machine) of a start-up. asyncpg's Records index like tuples and are kept as such."""
    with _unavailable_when_lost():
        async with store.db.connection() as conn:
            raw: Any = conn.raw_connection
            if store.is_sqlite:
                cursor = await raw.execute(_BOARD_ROWS)
                rows: list[BoardRow] = await cursor.fetchall()
                await cursor.close()
            else:
                rows = [tuple(record) for record in await raw.fetch(_BOARD_ROWS)]
    return BoardRows(rows)


async def rebuild(store: Store, engine: Engine, relay: Relay) -> int:
    """Swap in the board built from SQL (the engine starts collecting rows published
    meanwhile before SQL is read, so none is lost), publish what the outbox still holds,
    then append the `board:rebuilt` marker: every instance's hub answers it with a fresh
    `leaderboard:initial` for its board watchers. Returns the number of players.

    The outbox is published after the swap, not before: its rows are ranked on the whole
    board, and a memory engine still loading its first board holds such publications until
    the board is in (a flush before the load would wait on the load)."""
    count = 0

    async def load() -> BoardRows:
        nonlocal count
        rows = await _snapshot(store)
        count = len(rows)
        return rows

    await engine.board_replace(load)
    await relay.flush()
    await engine.publish(Publication(events=(rebuilt_marker(),)))
    return count
