"""Connecting (after bringing the schema to the current revision), and write transactions that
serialize correctly on both SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import sqlalchemy as sa
from databases import Database
from databases.core import Connection
from sqlalchemy.dialects import postgresql, sqlite

from .migrate import migrate_to_head, require_head

PG_STATEMENT_TIMEOUT = 5.0  # seconds; longer than any statement of this service takes


class DatabaseUnavailable(Exception):
    """The database is not connected (yet): the request can be retried later (503)."""


def _lost_connection_errors() -> tuple[type[BaseException], ...]:
    """What losing the database looks like from the drivers: the network (refused, reset,
    timed out) and, on PostgreSQL, a dead session or a server shutting down (class 08, 57).
    SQL errors (a constraint, a bug) are not among them: those stay what they are."""
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:  # SQLite-only install
        return tuple(errors)
    errors += [
        asyncpg.exceptions.ConnectionDoesNotExistError,
        asyncpg.exceptions.PostgresConnectionError,
        asyncpg.exceptions.OperatorInterventionError,
    ]
    return tuple(errors)


LOST_CONNECTION = _lost_connection_errors()


@contextmanager
def _unavailable_when_lost() -> Iterator[None]:
    try:
        yield
    except LOST_CONNECTION as exc:
        raise DatabaseUnavailable(f"database: {type(exc).__name__}: {exc}") from exc


class _Database(Database):
    # Every query of `databases` goes through connection(): refusing here turns "not connected
    # yet" into one named error instead of an assertion deep inside the driver backend.
    def connection(self) -> Connection:
        if not self.is_connected:
            raise DatabaseUnavailable("the database is not connected yet")
        return super().connection()

    # The one-shot queries the services and the relay use: a lost database is a 503.
    async def fetch_all(self, query: Any, values: dict[str, Any] | None = None) -> Any:
        with _unavailable_when_lost():
            return await super().fetch_all(query, values)

    async def fetch_one(self, query: Any, values: dict[str, Any] | None = None) -> Any:
        with _unavailable_when_lost():
            return await super().fetch_one(query, values)

    async def fetch_val(
        self, query: Any, values: dict[str, Any] | None = None, column: Any = 0
    ) -> Any:
        with _unavailable_when_lost():
            return await super().fetch_val(query, values, column)

    async def execute(self, query: Any, values: dict[str, Any] | None = None) -> Any:
        with _unavailable_when_lost():
            return await super().execute(query, values)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # A busy SQLite file (another instance writing) waits up to 10 s instead of failing.
        # PostgreSQL: every statement bounded (asyncpg's command_timeout), so a network that
        # drops silently makes a write answer 503 (TimeoutError -> DatabaseUnavailable) instead
        # of hanging until the network returns.
        self.db = (
            _Database(url, timeout=10)
            if self.is_sqlite
            else _Database(url, min_size=1, max_size=10, command_timeout=PG_STATEMENT_TIMEOUT)
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
        """A transaction that may read-then-write safely under concurrency; losing the
        database in it (or before it) raises DatabaseUnavailable, and nothing is applied."""
        with _unavailable_when_lost():
            async with self._write() as conn:
                yield conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Connection]:
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
