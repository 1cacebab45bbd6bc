"""Rebuild the engine's board from SQL without a moment where readers see an empty board."""

from __future__ import annotations

import sqlalchemy as sa

from ..engine.base import BoardEntry, Engine, Publication
from .database import Store
from .outbox import Relay
from .rows import board_entry
from .tables import players


async def _snapshot(store: Store) -> list[BoardEntry]:
    return [board_entry(row) for row in await store.db.fetch_all(sa.select(players))]


async def rebuild(store: Store, engine: Engine, relay: Relay) -> int:
    """Publish what the outbox still holds, swap in the board built from SQL, then re-apply
    any row that changed meanwhile (the version guard keeps only newer rows). Returns the
    number of players."""
    await relay.flush()
    await engine.board_replace(await _snapshot(store))
    fresh = await _snapshot(store)
    if fresh:
        await engine.publish(Publication(board=tuple(fresh)))
    return len(fresh)
