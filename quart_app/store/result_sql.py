"""The SQL of applying a group of match results in one transaction.

The writer of match results (services/result_writer.py) hands a group of match ids and a
`decide` function; this module loads the matches and their players under the write lock,
lets `decide` work out the outcome on those rows, writes what it says (players, matches and
their outbox rows, in the same transaction) and commits. One implementation per database:

- SQLite: one long-lived connection, used only from one thread of its own, so a whole group
  (reads, Python decisions, writes, commit) costs one hop to that thread instead of a new
  connection, a thread and a round trip per statement through `databases`. The connection
  runs `synchronous=NORMAL` in WAL mode: a commit survives a crash of the process (it is in
  the WAL file once the commit returns), not a power loss of the machine.
- PostgreSQL: the asyncpg connection under a `databases` transaction (so losing it is a 503,
  store/database.py), statements prepared by asyncpg once per connection, rows locked in id
  order (matches, then players), the same order on every instance, so groups cannot deadlock.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from databases import DatabaseURL

from ..domain.board import BoardEntry
from .database import DatabaseUnavailable, Store

T = TypeVar("T")

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
# What losing the SQLite file looks like: locked past the busy timeout, I/O errors.
_SQLITE_UNAVAILABLE = ("locked", "busy", "disk i/o", "unable to open")


class SqliteResultSql:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.path = DatabaseURL(store.url).database
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="result-writer")
        self._conn: sqlite3.Connection | None = None

    async def apply(self, match_ids: Sequence[str], decide: Decide[T]) -> T:
        if not self.store.db.is_connected:
            raise DatabaseUnavailable("the database is not connected yet")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, self._apply, list(match_ids), decide)
        except sqlite3.OperationalError as exc:
            if any(word in str(exc).lower() for word in _SQLITE_UNAVAILABLE):
                raise DatabaseUnavailable(f"database: {exc}") from exc
            raise

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=False)

    # in the writer's thread ------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=SQLITE_BUSY_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            # The file is in WAL mode (store/migrate.py); see the module docstring.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

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

    async def close(self) -> None:
        return None
