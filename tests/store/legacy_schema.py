"""The schema as releases before migrations made it, frozen: `create_all` of the tables of that
time. A test builds a database this way to check that an existing deployment upgrades."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

sa.Table(
    "players",
    metadata,
    sa.Column("player_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("rating", sa.Float, nullable=False),
    sa.Column("wins", sa.Integer, nullable=False, server_default="0"),
    sa.Column("losses", sa.Integer, nullable=False, server_default="0"),
    sa.Column("draws", sa.Integer, nullable=False, server_default="0"),
    sa.Column("games", sa.Integer, nullable=False, server_default="0"),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Index("ix_players_rating_id", "rating", "player_id"),
)
sa.Table(
    "matches",
    metadata,
    sa.Column("match_id", sa.String(64), primary_key=True),
    sa.Column("player_a", sa.String(64), nullable=False),
    sa.Column("player_b", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("winner_id", sa.String(64), nullable=True),
    sa.Column("draw", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("rating_change_a", sa.Float, nullable=True),
    sa.Column("rating_change_b", sa.Float, nullable=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("scheduled_at", sa.String(40), nullable=True),
    sa.Column("started_at", sa.String(40), nullable=True),
    sa.Column("completed_at", sa.String(40), nullable=True),
)
sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(40), nullable=False, unique=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
