"""The SQL of applying a group of match results in one transaction.

The writer of match results (services/result_writer.py) hands a group of match ids and a
`decide` function; this module loads the matches and their players under the write lock,
lets `decide` work out the outcome on those rows, writes what it says (players, matches and
their outbox rows, in the same transaction) and commits. One implementation per database:

- SQLite: one long-lived connection on the event loop's thread (see SqliteResultSql), so a
  whole group (reads, Python decisions, writes, commit) costs no hop at all instead of a new
  connection, a thread and a round trip per statement through `databases`. The connection
  runs `synchronous=NORMAL` in WAL mode: a commit survives a crash of the process (it is in
  the WAL file once the commit returns), not a power loss of the machine.
- PostgreSQL: the asyncpg connection under a `databases` transaction (so losing it is a 503,
  store/database.py), statements prepared by asyncpg once per connection, rows locked in id
  order (matches, then players), the same order on every instance, so groups cannot deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from databases import DatabaseURL

from ..domain.board import BoardEntry
from .database import DatabaseUnavailable, Store

T = TypeVar("T")
log = logging.getLogger(__name__)

Rows = dict[str, dict[str, Any]]
Decide = Callable[[Rows, Rows], tuple[T, "GroupWrites"]]

SQLITE_BUSY_SECONDS = 10.0  # another process writing: wait, as store/database.py does


@dataclass(slots=True)
class GroupWrites:
    """What a group changes: each touched player's final row, each completed match's
    finished columns, and an outbox row (key, payload, created_at) per publication, in
    commit order."""

    players: dict[str, BoardEntry] = field(default_factory=dict)
    matches: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[tuple[str, str, float]] = field(default_factory=list)


class ResultSql(Protocol):
    async def apply(self, match_ids: Sequence[str], decide: Decide[T]) -> T: ...

    async def delete_published(self, keys: Sequence[str]) -> None:
        """Delete the outbox rows of a published group, in one statement."""

    async def close(self) -> None: ...


def result_sql(store: Store) -> ResultSql:
    return SqliteResultSql(store) if store.is_sqlite else PostgresResultSql(store)


def _player_values(entry: BoardEntry) -> tuple[Any, ...]:
    return (
        entry.rating,
        entry.wins,
        entry.losses,
        entry.draws,
        entry.games,
        entry.version,
        entry.player_id,
    )


def _match_values(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["status"],
        row["winner_id"],
        bool(row["draw"]),
        row["rating_change_a"],
        row["rating_change_b"],
        row["completed_at"],
        row["match_id"],
    )


# --- SQLite ------------------------------------------------------------------------------------
_SQLITE_UPDATE_PLAYER = (
    "UPDATE players SET rating = ?, wins = ?, losses = ?, draws = ?, games = ?, version = ?"
    " WHERE player_id = ?"
)
_SQLITE_FINISH_MATCH = (
    "UPDATE matches SET status = ?, winner_id = ?, draw = ?, rating_change_a = ?,"
    " rating_change_b = ?, completed_at = ? WHERE match_id = ?"
)
_SQLITE_OUTBOX = "INSERT INTO outbox (key, payload, created_at) VALUES (?, ?, ?)"
# What losing the SQLite file looks like: I/O errors, a file gone.
_SQLITE_UNAVAILABLE = ("disk i/o", "unable to open", "readonly", "malformed")
# Another connection holds the write lock: retried, backing off, for up to this long.
_BUSY_FIRST = 0.0005
_BUSY_MAX = 0.02
# Results committed between two checkpoints of the WAL into the database file.
CHECKPOINT_EVERY = 2000


class SqliteResultSql:
    """Runs each group on the event loop's own thread, synchronously: a group's SQL takes a
    fraction of a millisecond, while a hop to a worker thread and back measured about 5 ms
    here (the waker, the GIL and the scheduler, the process being pinned to one core). What
    could block for long is kept off the loop: the connection never waits for a lock (a
    busy database is retried asynchronously) and never checkpoints the WAL by itself (the
    fsyncs of a checkpoint happen in a thread of their own, every CHECKPOINT_EVERY results)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.path = DatabaseURL(store.url).database
        self.busy_seconds = SQLITE_BUSY_SECONDS
        self._conn: sqlite3.Connection | None = None
        self._since_checkpoint = 0
        self._checkpoint: asyncio.Future[None] | None = None
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="wal-checkpoint")

    async def apply(self, match_ids: Sequence[str], decide: Decide[T]) -> T:
        if not self.store.db.is_connected:
            raise DatabaseUnavailable("the database is not connected yet")
        outcome = await self._retrying(lambda: self._apply(list(match_ids), decide))
        self._since_checkpoint += len(match_ids)
        if self._since_checkpoint >= CHECKPOINT_EVERY and self._checkpoint is None:
            self._since_checkpoint = 0
            self._checkpoint = asyncio.get_running_loop().run_in_executor(
                self._checkpointer, self._checkpoint_wal
            )
            self._checkpoint.add_done_callback(self._checkpointed)
        return outcome

    async def delete_published(self, keys: Sequence[str]) -> None:
        if not self.store.db.is_connected:
            raise DatabaseUnavailable("the database is not connected yet")
        marks = ",".join("?" * len(keys))
        statement = f"DELETE FROM outbox WHERE key IN ({marks})"
        await self._retrying(lambda: self._connection().execute(statement, list(keys)))

    async def _retrying(self, work: Callable[[], T]) -> T:
        """`work()` on the loop's thread; a database locked by another connection is tried
        again, backing off, for up to busy_seconds (then 503)."""
        deadline = asyncio.get_running_loop().time() + self.busy_seconds
        wait = _BUSY_FIRST
        while True:
            try:
                return work()
            except sqlite3.OperationalError as exc:
                message = str(exc).lower()
                if "locked" in message or "busy" in message:
                    if asyncio.get_running_loop().time() + wait > deadline:
                        log.warning("SQLite busy for %g s: 503 (%s)", self.busy_seconds, exc)
                        raise DatabaseUnavailable(f"database: {exc}") from exc
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, _BUSY_MAX)
                    continue
                if any(words in message for words in _SQLITE_UNAVAILABLE):
                    raise DatabaseUnavailable(f"database: {exc}") from exc
                raise

    async def close(self) -> None:
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint
        self._checkpointer.shutdown(wait=False)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            # timeout=0: never wait for a lock on the loop's thread (apply() retries).
            conn = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            # The file is in WAL mode (store/migrate.py); see the module docstring.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._conn = conn
        return self._conn

    def _checkpoint_wal(self) -> None:
        # PASSIVE: copies what it can without waiting for (or blocking) the writer.
        with contextlib.closing(sqlite3.connect(self.path, timeout=self.busy_seconds)) as conn:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _checkpointed(self, done: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not done.cancelled() and done.exception() is not None:
            log.warning("WAL checkpoint failed: %r", done.exception())

    def _apply(self, match_ids: list[str], decide: Decide[T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            marks = ",".join("?" * len(match_ids))
            matches = {
                row["match_id"]: dict(row)
                for row in conn.execute(
                    f"SELECT * FROM matches WHERE match_id IN ({marks})", match_ids
                )
            }
            player_ids = sorted({m[side] for m in matches.values() for side in _SIDES})
            marks = ",".join("?" * len(player_ids))
            players = (
                {
                    row["player_id"]: dict(row)
                    for row in conn.execute(
                        f"SELECT * FROM players WHERE player_id IN ({marks})", player_ids
                    )
                }
                if player_ids
                else {}
            )
            outcome, writes = decide(matches, players)
            conn.executemany(
                _SQLITE_UPDATE_PLAYER, [_player_values(e) for e in writes.players.values()]
            )
            conn.executemany(_SQLITE_FINISH_MATCH, [_match_values(m) for m in writes.matches])
            conn.executemany(_SQLITE_OUTBOX, writes.outbox)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcome


_SIDES = ("player_a", "player_b")

# --- PostgreSQL --------------------------------------------------------------------------------
_PG_SELECT_MATCHES = (
    "SELECT * FROM matches WHERE match_id = ANY($1::text[]) ORDER BY match_id FOR UPDATE"
)
_PG_SELECT_PLAYERS = (
    "SELECT * FROM players WHERE player_id = ANY($1::text[]) ORDER BY player_id FOR UPDATE"
)
_PG_UPDATE_PLAYER = (
    "UPDATE players SET rating = $1, wins = $2, losses = $3, draws = $4, games = $5,"
    " version = $6 WHERE player_id = $7"
)
_PG_FINISH_MATCH = (
    "UPDATE matches SET status = $1, winner_id = $2, draw = $3, rating_change_a = $4,"
    " rating_change_b = $5, completed_at = $6 WHERE match_id = $7"
)
_PG_OUTBOX = "INSERT INTO outbox (key, payload, created_at) VALUES ($1, $2, $3)"


class PostgresResultSql:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def apply(self, match_ids: Sequence[str], decide: Decide[T]) -> T:
        async with self.store.write() as conn:
            raw = conn.raw_connection  # asyncpg, inside the transaction write() began
            matches = {
                row["match_id"]: dict(row)
                for row in await raw.fetch(_PG_SELECT_MATCHES, list(match_ids))
            }
            player_ids = sorted({m[side] for m in matches.values() for side in _SIDES})
            players = {
                row["player_id"]: dict(row)
                for row in await raw.fetch(_PG_SELECT_PLAYERS, player_ids)
            }
            outcome, writes = decide(matches, players)
            if writes.players:
                await raw.executemany(
                    _PG_UPDATE_PLAYER, [_player_values(e) for e in writes.players.values()]
                )
                await raw.executemany(_PG_FINISH_MATCH, [_match_values(m) for m in writes.matches])
                await raw.executemany(_PG_OUTBOX, writes.outbox)
        return outcome

    async def delete_published(self, keys: Sequence[str]) -> None:
        await self.store.db.execute(
            "DELETE FROM outbox WHERE key = ANY(:keys)", {"keys": list(keys)}
        )

    async def close(self) -> None:
        return None
