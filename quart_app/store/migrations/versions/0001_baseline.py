"""The schema as `metadata.create_all` made it before migrations existed.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

A database created the old way has exactly these tables and no alembic_version: store/migrate.py
stamps it at this revision instead of running it (see `adopt_unversioned`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "players",
        sa.Column("player_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("rating", sa.Float, nullable=False),
        sa.Column("wins", sa.Integer, nullable=False, server_default="0"),
        sa.Column("losses", sa.Integer, nullable=False, server_default="0"),
        sa.Column("draws", sa.Integer, nullable=False, server_default="0"),
        sa.Column("games", sa.Integer, nullable=False, server_default="0"),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_players_rating_id", "players", ["rating", "player_id"])
    op.create_table(
        "matches",
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
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(40), nullable=False, unique=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("matches")
    op.drop_index("ix_players_rating_id", table_name="players")
    op.drop_table("players")
