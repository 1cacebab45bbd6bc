"""Alembic environment: migrate on the connection the caller passes (store/migrate.py)."""

from __future__ import annotations

from alembic import context

from quart_app.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `rankpulse migrate` (it holds the migration lock)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place: batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
