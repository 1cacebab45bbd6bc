"""Deleting an outbox row once it is published, cheaply enough to do it for every publication.

The relay deletes each row in the step that published it (store/outbox.py says why). Through
`databases`, a statement on SQLite opens a connection and a thread each time, which measured
about half of a result's cost; here SQLite gets one long-lived connection used only from one
thread of its own (as the result writer's, store/result_sql.py), and a DELETE in WAL mode
with `synchronous=NORMAL` is a fraction of a millisecond. PostgreSQL goes through the pool.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from databases import DatabaseURL

from .database import DatabaseUnavailable, Store, is_database_lost

_DELETE_ROW = "DELETE FROM outbox WHERE key = :key"
_SQLITE_DELETE_ROW = "DELETE FROM outbox WHERE key = ?"
_SQLITE_BUSY_SECONDS = 10.0  # another writer holds the file: wait, as store/database.py does


class PublishedRows(Protocol):
    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


def published_rows(store: Store) -> PublishedRows:
    return _SqliteRows(store) if store.is_sqlite else _PooledRows(store)


class _PooledRows:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def delete(self, key: str) -> None:
        await self.store.db.execute(_DELETE_ROW, {"key": key})

    async def close(self) -> None:
        return None


class _SqliteRows:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.path = DatabaseURL(store.url).database
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="outbox-deleter")
        self._conn: sqlite3.Connection | None = None

    async def delete(self, key: str) -> None:
        if not self.store.db.is_connected:
            raise DatabaseUnavailable("the database is not connected yet")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._delete, key)
        except sqlite3.Error as exc:
            if is_database_lost(exc):
                raise DatabaseUnavailable(f"database: {exc}") from exc
            raise

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=False)

    # in the deleter's thread ------------------------------------------------------------------
    def _delete(self, key: str) -> None:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=_SQLITE_BUSY_SECONDS,
                isolation_level=None,  # each DELETE commits by itself
                check_same_thread=False,
            )
            # The file is in WAL mode (store/migrate.py): a commit survives a crash of the
            # process; a power loss may undo it, and then the row is published again,
            # harmlessly (the engine's guard, or the board's versions).
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        self._conn.execute(_SQLITE_DELETE_ROW, (key,))

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
