"""The board read straight from SQL (served while the engine's board is incomplete): every page,
at any offset, is exactly the documented order (rating descending, ties by player id), the
ranks counted from the offset, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from quart_app.store import board_reads
from quart_app.store.database import Store
from quart_app.store.seed import seed_players
from quart_app.store.tables import players

PLAYERS = 3_000


async def test_pages_at_any_offset_follow_the_board_order(database_url: str) -> None:
    store = Store(database_url)
    await store.connect()
    try:
        await seed_players(store, PLAYERS)
        # Ties of three players straddling page edges, beside the seed's own ties.
        await store.db.execute(
            sa.update(players)
            .where(players.c.player_id.in_(["s0000007", "s0000100", "s0002999"]))
            .values(rating=1234.5)
        )
        reference = await store.db.fetch_all(
            sa.select(players.c.player_id).order_by(
                players.c.rating.desc(), players.c.player_id.asc()
            )
        )
        order = [row.player_id for row in reference]
        tie = order.index("s0000007")
        for offset in (0, 1, 99, 100, tie - 1, tie, tie + 1, 1500, PLAYERS - 7, PLAYERS, 5000):
            for limit in (1, 7, 100):
                ranked, total = await board_reads.page(store, offset, limit)
                assert total == PLAYERS
                assert [entry.player_id for _, entry in ranked] == order[offset : offset + limit]
                assert [rank for rank, _ in ranked] == list(
                    range(offset + 1, offset + 1 + len(ranked))
                )
    finally:
        await store.disconnect()
