"""Schema migrations on SQLite and PostgreSQL: an empty database gets exactly the schema of
tables.py; a database made by an earlier release (create_all, unversioned) is adopted with its
data; concurrent migrations wait for each other; an instance told not to migrate refuses an
old schema by name."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from quart_app.store.database import Store
from quart_app.store.migrate import (
    BASELINE,
    ForeignSchema,
    SchemaNotCurrent,
    head_revision,
    migrate_to_head,
    require_head,
    sqlalchemy_url,
)
from quart_app.store.tables import metadata, players

from . import legacy_schema


async def on_connection(url: str, work: Any) -> Any:
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


def schema_differences(connection: sa.Connection) -> list[Any]:
    """What autogenerate would change to make the database match tables.py (nothing, we hope)."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    diff: list[Any] = compare_metadata(context, metadata)
    return diff


def revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def test_an_empty_database_gets_exactly_the_schema_of_tables_py(database_url: str) -> None:
    assert await migrate_to_head(database_url) == head_revision()
    assert await on_connection(database_url, schema_differences) == []
    assert await on_connection(database_url, revision) == head_revision()


async def test_migrating_twice_changes_nothing(database_url: str) -> None:
    await migrate_to_head(database_url)
    assert await migrate_to_head(database_url) == head_revision()
    assert await on_connection(database_url, schema_differences) == []


async def test_a_database_of_an_earlier_release_is_adopted_with_its_data(
    database_url: str,
) -> None:
    def create_the_old_way(connection: sa.Connection) -> None:
        legacy_schema.metadata.create_all(connection)
        connection.execute(
            sa.text(
                "INSERT INTO players (player_id, name, rating, created_at) "
                "VALUES ('ann', 'Ann', 1234.5, '2026-01-01T00:00:00Z')"
            )
        )

    await on_connection(database_url, create_the_old_way)
    assert await on_connection(database_url, revision) is None

    store = Store(database_url)
    await store.connect()
    try:
        row = await store.db.fetch_one(sa.select(players).where(players.c.player_id == "ann"))
        assert row is not None and row._mapping["rating"] == 1234.5
    finally:
        await store.disconnect()
    assert await on_connection(database_url, revision) == head_revision()
    assert await on_connection(database_url, schema_differences) == []


async def test_a_database_with_only_some_of_the_tables_is_refused(database_url: str) -> None:
    def create_one_table(connection: sa.Connection) -> None:
        legacy_schema.metadata.tables["players"].create(connection)

    await on_connection(database_url, create_one_table)
    with pytest.raises(ForeignSchema, match="not created by Love Rank Pulse"):
        await migrate_to_head(database_url)


async def test_concurrent_migrations_wait_for_each_other(database_url: str) -> None:
    revisions = await asyncio.gather(*(migrate_to_head(database_url) for _ in range(4)))
    assert revisions == [head_revision()] * 4
    assert await on_connection(database_url, schema_differences) == []


async def test_without_migrating_an_old_schema_is_refused_by_name(database_url: str) -> None:
    with pytest.raises(SchemaNotCurrent, match="rankpulse migrate"):
        await require_head(database_url)
    await migrate_to_head(database_url)
    assert await require_head(database_url) == head_revision()


def test_the_baseline_is_the_first_revision() -> None:
    assert BASELINE == "0001"
    assert head_revision() >= BASELINE
