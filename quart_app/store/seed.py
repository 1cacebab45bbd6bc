"""Seeding many players straight into SQL, in one statement (benchmarks and scale tests).

Going through the API would take minutes for a million players; one INSERT ... SELECT over a
generated series takes seconds. Ratings are spread over 1000..1399.99 with many ties (the
board's tie order is part of what a scale run exercises).
"""

from __future__ import annotations

from .database import Store

# No '%' in the SQL (the SQLite driver formats the statement with it): modulo by hand.
# i -> a rating with many equal values: 40,000 distinct ratings, spread pseudo-randomly.
_SQLITE = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :count)
INSERT INTO players (player_id, name, rating, wins, losses, draws, games, version, created_at)
SELECT :prefix || substr('0000000' || i, -7, 7), :prefix || substr('0000000' || i, -7, 7),
       1000 + (i * 7919 - (i * 7919 / 40000) * 40000) / 100.0, 0, 0, 0, 0, 1, :created
FROM n
"""
_POSTGRES = """
INSERT INTO players (player_id, name, rating, wins, losses, draws, games, version, created_at)
SELECT :prefix || lpad(i::text, 7, '0'), :prefix || lpad(i::text, 7, '0'),
       1000 + (i::bigint * 7919 - (i::bigint * 7919 / 40000) * 40000) / 100.0,
       0, 0, 0, 0, 1, :created
FROM generate_series(0, :count - 1) AS i
"""


def seeded_id(prefix: str, index: int) -> str:
    """The id `seed_players` gives player `index`."""
    return f"{prefix}{index:07d}"


async def seed_players(store: Store, count: int, prefix: str = "s") -> None:
    """Insert `count` players named <prefix><7-digit index>, in one statement."""
    if count <= 0:
        return
    statement = _SQLITE if store.is_sqlite else _POSTGRES
    values = {"count": count, "prefix": prefix, "created": "2026-01-01T00:00:00.000Z"}
    await store.db.execute(statement, values)
