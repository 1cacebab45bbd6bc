"""Rebuild the engine's board from SQL without a moment where readers see an empty board."""

from __future__ import annotations

import sqlalchemy as sa

from ..domain.board import BoardEntry
from ..domain.publication import Publication
from ..engine.base import Engine
from ..engine.board_state import rebuilt_marker
from .database import Store
from .outbox import Relay
from .rows import board_entry
from .tables import players


async def _snapshot(store: Store) -> list[BoardEntry]:
    return [board_entry(row) for row in await store.db.fetch_all(sa.select(players))]


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
