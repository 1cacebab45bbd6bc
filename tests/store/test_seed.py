"""Bulk seeding (benchmarks, scale tests), on SQLite and PostgreSQL: N players with the ids
`seeded_id` names, at ratings between 1000 and 1400 with ties, each a fresh row (version 1)."""

from __future__ import annotations

import sqlalchemy as sa

from quart_app.store.database import Store
from quart_app.store.seed import seed_players, seeded_id
from quart_app.store.tables import players


async def test_seeding_inserts_the_named_players(database_url: str) -> None:
    store = Store(database_url)
    await store.connect()
    try:
        await seed_players(store, 50_000)
        rows = await store.db.fetch_all(sa.select(players.c.player_id, players.c.rating))
        ids = {row.player_id for row in rows}
        ratings = [row.rating for row in rows]
        assert ids == {seeded_id("s", i) for i in range(50_000)}
        assert 1000 <= min(ratings) and max(ratings) < 1400
        assert len(set(ratings)) < len(ratings)  # ties: the board's tie order is exercised
        versions = await store.db.fetch_val(sa.select(sa.func.max(players.c.version)))
        assert versions == 1
    finally:
        await store.disconnect()
