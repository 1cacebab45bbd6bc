"""Connecting (after bringing the schema to the current revision), and write transactions that
serialize correctly on both SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from databases import Database
from databases.core import Connection
from sqlalchemy.dialects import postgresql, sqlite

from .migrate import migrate_to_head, require_head


class DatabaseUnavailable(Exception):
    """The database is not connected (yet): the request can be retried later (503)."""


class _Database(Database):
    # Every query of `databases` goes through connection(): refusing here turns "not connected
    # yet" into one named error instead of an assertion deep inside the driver backend.
    def connection(self) -> Connection:
        if not self.is_connected:
            raise DatabaseUnavailable("the database is not connected yet")
        return super().connection()


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # A busy SQLite file (another instance writing) waits up to 10 s instead of failing.
        self.db = (
            _Database(url, timeout=10)
            if self.is_sqlite
            else _Database(url, min_size=1, max_size=10)
        )
        # SQLite allows one writer: queueing writers of this process here keeps them from
        # contending on the file lock; BEGIN IMMEDIATE orders them with other processes.
        self._sqlite_writer = asyncio.Lock()

    async def connect(self, migrate: bool = True) -> None:
        """Bring the schema to the current revision (or, with migrate=False, insist that it is
        there already), then open the pool. Raises when the database cannot be reached: the
        caller decides whether to retry."""
        if migrate:
            await migrate_to_head(self.url)
        else:
            await require_head(self.url)
        await self.db.connect()

    async def disconnect(self) -> None:
        if self.db.is_connected:
            await self.db.disconnect()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2):
                await self.db.fetch_val("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - readiness reports any failure as not ready
            return False

    def insert_ignore(self, table: sa.Table) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING in this database's dialect."""
        dialect_insert = sqlite.insert if self.is_sqlite else postgresql.insert
        return dialect_insert(table).on_conflict_do_nothing()

    def for_update(self, query: sa.Select[Any]) -> sa.Select[Any]:
        # SQLite has no row locks; BEGIN IMMEDIATE already made this transaction the only writer.
        return query if self.is_sqlite else query.with_for_update()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        """A transaction that may read-then-write safely under concurrency."""
        if not self.is_sqlite:
            async with self.db.connection() as conn, conn.transaction():
                yield conn
            return
        async with self._sqlite_writer, self.db.connection() as conn:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
