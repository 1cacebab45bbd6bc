"""Rebuild the engine's board from SQL without a moment where readers see an empty board."""

from __future__ import annotations

from typing import Any

from ..domain.board import BoardEntry
from ..domain.publication import Publication
from ..engine.base import Engine
from ..engine.board_state import rebuilt_marker
from .database import Store, _unavailable_when_lost
from .outbox import Relay

# Columns in BoardEntry's field order, so a driver row becomes an entry positionally.
_BOARD_ROWS = "SELECT player_id, name, rating, wins, losses, draws, games, version FROM players"


async def _snapshot(store: Store) -> list[BoardEntry]:
    """Every player's board row. Read through the driver's own connection (aiosqlite,
    asyncpg): `databases` builds a Record per row through SQLAlchemy's result processing,
    which at 100,000 players took seconds (measured 9 s on this machine) of a start-up."""
    with _unavailable_when_lost():
        async with store.db.connection() as conn:
            raw: Any = conn.raw_connection
            if store.is_sqlite:
                cursor = await raw.execute(_BOARD_ROWS)
                rows = await cursor.fetchall()
                await cursor.close()
            else:
                rows = await raw.fetch(_BOARD_ROWS)
    return [BoardEntry(*row) for row in rows]


async def rebuild(store: Store, engine: Engine, relay: Relay) -> int:
    """Publish what the outbox still holds, swap in the board built from SQL (the engine
    starts collecting rows published meanwhile before SQL is read, so none is lost), then
    append the `board:rebuilt` marker: every instance's hub answers it with a fresh
    `leaderboard:initial` for its board watchers. Returns the number of players."""
    await relay.flush()
    count = 0

    async def load() -> list[BoardEntry]:
        nonlocal count
        entries = await _snapshot(store)
        count = len(entries)
        return entries

    await engine.board_replace(load)
    await engine.publish(Publication(events=(rebuilt_marker(),)))
    return count
