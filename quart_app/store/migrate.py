"""Bringing a database's schema to the current revision (Alembic), one instance at a time.

Instances that start at the same moment must not run the same DDL side by side (PostgreSQL
then fails with a duplicate pg_type row, SQLite with `database is locked`): the migration runs
under a lock that every instance waits for: a session advisory lock on PostgreSQL, an flock on a
file beside the database on SQLite (SQLite is always on this machine). The first one migrates,
the others find the schema current and go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from .tables import metadata

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The revision whose schema equals what `metadata.create_all` made before migrations existed.
BASELINE = "0001"
# Any constant shared by all instances of this service; "lrp-migrate" as an int8.
ADVISORY_LOCK_KEY = 0x6C72702D6D6967
# How long a SQLite connection waits for another writer before `database is locked`.
SQLITE_BUSY_SECONDS = 30.0
CONNECT_SECONDS = 10.0

T = TypeVar("T")


class SchemaNotCurrent(Exception):
    """The database is not at the head revision (and this instance may not migrate it)."""


class ForeignSchema(Exception):
    """The database holds some of our tables but not all: not made by this service."""


def sqlalchemy_url(url: str) -> str:
    """The async SQLAlchemy driver for a DATABASE_URL (`databases` names them differently)."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url.removeprefix("sqlite:")
    if url.startswith("postgresql:"):
        return "postgresql+asyncpg:" + url.removeprefix("postgresql:")
    return url


async def migrate_to_head(url: str) -> str:
    """Upgrade the database to the newest revision; the revision it is at afterwards."""
    return await _with_migration_lock(url, _upgrade)


async def require_head(url: str) -> str:
    """Raise SchemaNotCurrent unless the database is at the newest revision."""
    return await _with_migration_lock(url, _check_current)


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def current_revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: sa.Connection) -> str:
    config = _config(connection)
    adopt_unversioned(connection, config)
    command.upgrade(config, "head")
    # The connection autobegan a transaction (inspection, stamp): Alembic then leaves the
    # commit to its owner, which is us.
    connection.commit()
    return current_revision(connection) or ""


def _check_current(connection: sa.Connection) -> str:
    current, head = current_revision(connection), head_revision()
    if current != head:
        raise SchemaNotCurrent(
            f"the database schema is at {current or 'no revision'}, this release needs {head}: "
            "run `rankpulse migrate` (or set MIGRATE_ON_START=true)"
        )
    return current


def adopt_unversioned(connection: sa.Connection, config: Config) -> None:
    """A database made by an earlier release (create_all, no alembic_version) is stamped at the
    baseline, whose schema is exactly what create_all made; running the baseline instead would
    fail on CREATE TABLE. A database holding only some of the tables is not one we made: refuse
    rather than guess."""
    existing = set(sa.inspect(connection).get_table_names())
    ours = set(metadata.tables)
    if "alembic_version" in existing or not existing & ours:
        return
    missing = ours - existing
    if missing:
        raise ForeignSchema(
            f"the database has some of this service's tables but not {sorted(missing)}: "
            "it was not created by Love Rank Pulse; refusing to migrate it"
        )
    command.stamp(config, BASELINE)


async def _with_migration_lock(url: str, work: Callable[[sa.Connection], T]) -> T:
    is_sqlite = url.startswith("sqlite")
    # SQLite: wait for another writer; PostgreSQL: give up on an unreachable host (the caller
    # retries) instead of asyncpg's 60 s.
    connect_args = {"timeout": SQLITE_BUSY_SECONDS if is_sqlite else CONNECT_SECONDS}
    engine = create_async_engine(sqlalchemy_url(url), connect_args=connect_args)
    try:
        if is_sqlite:
            async with _file_lock(_sqlite_lock_path(url)), engine.connect() as conn:
                # WAL lets readers run beside the one writer; switching modes needs the file
                # alone, so it happens here, under the lock, and persists in the file.
                await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                return await conn.run_sync(work)
        async with engine.connect() as conn, _advisory_lock(conn):
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _advisory_lock(conn: AsyncConnection) -> AsyncIterator[None]:
    # Session-level: it survives the migration's commits and goes with the connection, so a
    # crashed instance never leaves it held.
    await conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    await conn.commit()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await conn.execute(
                sa.text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
            await conn.commit()


def _sqlite_lock_path(url: str) -> str:
    database = sa.engine.make_url(url).database
    assert database, "a SQLite DATABASE_URL names a file"
    return database + ".migrate-lock"


@contextlib.asynccontextmanager
async def _file_lock(path: str) -> AsyncIterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # flock blocks: wait in a thread so this instance keeps serving /healthz meanwhile.
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
