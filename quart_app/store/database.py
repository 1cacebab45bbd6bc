"""Connecting (after bringing the schema to the current revision), and write transactions that
serialize correctly on both SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any

import aiosqlite
import sqlalchemy as sa
from databases import Database
from databases.backends.sqlite import SQLitePool
from databases.core import Connection
from sqlalchemy.dialects import postgresql, sqlite

from .migrate import migrate_to_head, require_head

log = logging.getLogger(__name__)

PG_STATEMENT_TIMEOUT = 5.0  # seconds; longer than any statement of this service takes


class DatabaseUnavailable(Exception):
    """The database is not connected (yet): the request can be retried later (503)."""


def _lost_connection_errors() -> tuple[type[BaseException], ...]:
    """What losing the database looks like from the drivers, by type: the network (refused,
    reset, timed out) and, on PostgreSQL, a dead session (class 08), a server shutting down
    or refusing sessions (57), out of connections or resources (53), and a transaction the
    server rolled back to break a deadlock or a serialization conflict (40). Each means that
    nothing of the transaction was applied, or (a lost COMMIT) that a retry is safe.
    SQL errors (a constraint, a bug) are not among them: those stay what they are."""
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:  # SQLite-only install
        return tuple(errors)
    errors += [
        asyncpg.exceptions.PostgresConnectionError,
        asyncpg.exceptions.OperatorInterventionError,
        asyncpg.exceptions.InsufficientResourcesError,
        asyncpg.exceptions.TransactionRollbackError,
    ]
    return tuple(errors)


LOST_CONNECTION = _lost_connection_errors()

# asyncpg reports a connection that is already gone as a plain InterfaceError, told apart
# from a misuse only by its message: a reset that arrived between two statements ("connection
# is closed"), a ROLLBACK after the loss ("the underlying connection is closed"), a pool
# connection detached when it died ("released back to the pool"), a connection left busy by
# a timed-out statement, and the pool shutting down.
_GONE_CONNECTION_MESSAGES = (
    "connection is closed",
    "connection was closed",
    "released back to the pool",
    "another operation is",
    "pool is clos",
    # InternalClientError: a pooled connection that a loss left mid-operation, taken by the
    # next write ("cannot switch to state 15; another operation (2) is in progress")
    "another operation (",
)
# SQLite: another process held the file past the busy timeout, or the file cannot be used.
_UNUSABLE_FILE_MESSAGES = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "unable to open database file",
)


def _is_interface_error(exc: BaseException) -> bool:
    try:
        import asyncpg
    except ImportError:
        return False
    # DataError is an InterfaceError too: an argument the driver cannot encode (a bug).
    client_side = (asyncpg.exceptions.InterfaceError, asyncpg.exceptions.InternalClientError)
    return isinstance(exc, client_side) and not isinstance(exc, asyncpg.exceptions.DataError)


def is_database_lost(exc: BaseException) -> bool:
    """Whether `exc` means the database (or the connection to it) is unavailable, so that the
    request can only be answered 503 and retried."""
    if isinstance(exc, (DatabaseUnavailable, *LOST_CONNECTION)):
        return True
    message = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError):
        return any(fragment in message for fragment in _UNUSABLE_FILE_MESSAGES)
    if _is_interface_error(exc):
        if any(fragment in message for fragment in _GONE_CONNECTION_MESSAGES):
            return True
        # raised while cleaning up after the loss itself
        cause = exc.__cause__ or exc.__context__
        return cause is not None and is_database_lost(cause)
    return False


@contextmanager
def _unavailable_when_lost() -> Iterator[None]:
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        if is_database_lost(exc):
            raise DatabaseUnavailable(f"database: {type(exc).__name__}: {exc}") from exc
        raise


def _abandons_connection(exc: BaseException | None) -> bool:
    """Whether a PostgreSQL connection that raised `exc` is closed at once instead of being
    rolled back and reset for the pool: when the database is lost, each of those steps waits
    for its own timeout (and asyncpg's pool release waits, unbounded, for the cancellation of
    a timed-out statement, which needs a new connection through the same dead network); a
    cancelled statement leaves the connection busy too. Closing it rolls back on the server."""
    if isinstance(exc, asyncio.CancelledError):
        return True
    return isinstance(exc, Exception) and is_database_lost(exc)


class _Connection(Connection):
    """`databases`' per-task connection, made safe for long-lived tasks (the relay, the
    result writer): a failed hand-back to the pool no longer leaves it marked acquired, which
    made every later query of that task fail with "Connection is already acquired"."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        database: _Database = self._database  # type: ignore[assignment]
        if database.terminates_lost and self._connection_counter == 1:
            if _abandons_connection(exc_value):
                self._terminate()
        try:
            await super().__aexit__(exc_type, exc_value, traceback)
        except Exception as exc:  # noqa: BLE001 - the connection is gone; nothing else is
            if self._connection_counter == 0:
                self._connection = self._backend.connection()  # a fresh, unacquired one
                self._database._connection = None
            log.debug("a database connection could not be released: %r", exc)

    def _terminate(self) -> None:
        with contextlib.suppress(Exception):  # already detached from the pool: nothing to do
            self.raw_connection.terminate()


class _SQLiteConnections(SQLitePool):
    """`databases`' SQLite pool (an aiosqlite connection, with a thread of its own, per
    acquire, closed at release) keeping each connection until its thread has stopped. A task
    cancelled again while its connection was closing leaves the connection open with its
    statements queued; if the event loop closed before they ended, their end raised
    `Event loop is closed` in that thread. `finish()` waits for them, then stops what is
    left."""

    def __init__(self, url: Any, **options: Any) -> None:
        super().__init__(url, **options)
        self._opened: set[aiosqlite.Connection] = set()

    async def acquire(self) -> aiosqlite.Connection:
        self._opened = {c for c in self._opened if _thread_of(c).is_alive()}
        connection = await super().acquire()
        self._opened.add(connection)
        return connection

    async def finish(self, within: float) -> None:
        """Wait up to `within` seconds (or less: Runtime.stop bounds the whole disconnect)
        for every connection's thread to stop; then, or when cut short, stop what is left: a
        connection nobody closes keeps its thread, and so the process, alive. (Stopping
        sooner could end a thread before the close that a cancelled task still waits for.)"""
        opened, self._opened = self._opened, set()
        deadline = time.monotonic() + within
        try:
            while time.monotonic() < deadline and any(_thread_of(c).is_alive() for c in opened):
                await asyncio.sleep(0.01)  # (not a thread join: it would hold the loop's exit)
        finally:
            for connection in opened:
                if _thread_of(connection).is_alive():
                    connection.stop()  # (after its statements; a stopped thread never runs it)


def _thread_of(connection: aiosqlite.Connection) -> threading.Thread:
    return connection._thread  # aiosqlite's worker: it stops after the connection's close


class _Database(Database):
    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        # asyncpg connections can be closed at once without a round trip; SQLite's cannot
        # be lost that way (its failures are a busy file), so they are rolled back.
        self.terminates_lost = not url.startswith("sqlite")
        self._sqlite: _SQLiteConnections | None = None
        if not self.terminates_lost:
            backend: Any = self._backend
            self._sqlite = backend._pool = _SQLiteConnections(
                backend._database_url, **backend._options
            )

    async def disconnect(self) -> None:
        await super().disconnect()
        if self._sqlite is not None:
            # A statement may be waiting for a busy file: bounded by the busy timeout.
            await self._sqlite.finish(within=self.options.get("timeout", 5.0) + 1.0)

    # Every query of `databases` goes through connection(): refusing here turns "not connected
    # yet" into one named error instead of an assertion deep inside the driver backend.
    def connection(self) -> Connection:
        if not self.is_connected:
            raise DatabaseUnavailable("the database is not connected yet")
        # (Database.connection(), building our _Connection)
        if self._global_connection is not None:
            return self._global_connection
        if not self._connection:
            self._connection = _Connection(self, self._backend)
        return self._connection

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
    def __init__(self, url: str, sqlite_busy_timeout: float = 10.0) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # A busy SQLite file (another instance writing) waits up to 10 s instead of failing
        # (and then the write is a 503).
        # PostgreSQL: every statement and every new connection bounded (asyncpg's
        # command_timeout and timeout), so a network that drops silently makes a write answer
        # 503 (TimeoutError -> DatabaseUnavailable) instead of hanging until it returns.
        self.db = (
            _Database(url, timeout=sqlite_busy_timeout)
            if self.is_sqlite
            else _Database(
                url,
                min_size=1,
                max_size=10,
                command_timeout=PG_STATEMENT_TIMEOUT,
                timeout=PG_STATEMENT_TIMEOUT,  # opening a connection, too
            )
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
        database in it (or before it) raises DatabaseUnavailable, and nothing is applied,
        except when the COMMIT itself was lost after the server applied it: then the
        caller's retry must find the change made (results are keyed by match id)."""
        with _unavailable_when_lost():
            async with self._write() as conn:
                yield conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Connection]:
        # BEGIN / COMMIT / ROLLBACK by hand, not `databases`' Transaction: when BEGIN or
        # COMMIT fails, that one keeps its connection acquired (a pool slot lost for good per
        # failure), and a ROLLBACK failing on the dead connection replaces the error that
        # made it roll back.
        turn = self._sqlite_writer if self.is_sqlite else contextlib.nullcontext()
        async with turn, self.db.connection() as conn:
            # SQLite: IMMEDIATE takes the write lock now, ordering this writer with those of
            # other processes, as row locks would.
            await self._control(conn, "BEGIN IMMEDIATE" if self.is_sqlite else "BEGIN")
            try:
                yield conn
                await self._control(conn, "COMMIT")
            except BaseException as exc:
                # (an abandoned connection is closed on the way out: the server rolls back)
                if self.is_sqlite or not _abandons_connection(exc):
                    await self._roll_back_quietly(conn)
                raise

    async def _control(self, conn: Connection, statement: str) -> None:
        if self.is_sqlite:
            await conn.execute(statement)
        else:
            # asyncpg's simple protocol: one round trip, nothing prepared.
            await conn.raw_connection.execute(statement)

    async def _roll_back_quietly(self, conn: Connection) -> None:
        """The error that got us here is the one to report: a ROLLBACK failing too (the
        connection is gone, so the server rolls back by itself) must not replace it."""
        try:
            await self._control(conn, "ROLLBACK")
        except Exception as exc:  # noqa: BLE001 - reported by the error being raised
            log.debug("rollback failed: %r", exc)
