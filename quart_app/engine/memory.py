"""The embedded engine: board, log and presence in this process (one instance only)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from collections import OrderedDict, deque
from operator import itemgetter

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from ..domain.publication import RankTable
from .base import (
    POLL_PRESENCE_SECONDS,
    BoardEntry,
    Engine,
    Event,
    LogGap,
    Publication,
    Ranked,
    build_event,
    presence_draft,
)
from .board_state import (
    BoardIncomplete,
    BoardLoader,
    BoardRow,
    board_row,
    loaded_rows,
    row_entry,
)
from .limits_memory import MemoryLimits
from .rate_limit import RateDecision

# How many idempotency keys are remembered; a replay older than this would be re-applied,
# and the outbox never replays anything that old (it deletes rows once published).
_KEYS_REMEMBERED = 100_000


_BY_KEY = itemgetter(0)  # -rating
_BY_ID = itemgetter(1)


def _board_ordered(rows: list[BoardRow]) -> list[BoardRow]:
    """`rows` in board order, sorted in place. Two stable sorts on one plain key each (id,
    then -rating) give the same order as one sort on (-rating, id) tuples, in a fifth of the
    time at 1,000,000 rows: CPython compares floats and strings fast, tuples of them slowly."""
    rows.sort(key=_BY_ID)
    rows.sort(key=_BY_KEY)
    return rows


def _sorted_list(ordered: list[BoardRow]) -> SortedList:
    """A SortedList of rows already in board order, cut straight into its sublists.

    SortedList(rows) and .update(rows) sort again: 0.9 s of CPU for 1,000,000 presorted rows,
    against 0.1 s for this. It fills the same fields update() fills on an empty list
    (sortedcontainers 2.x; tests/engine/test_board_loading.py checks the invariants)."""
    order = SortedList()
    load = order._load
    order._lists = [ordered[i : i + load] for i in range(0, len(ordered), load)]
    order._maxes = [sublist[-1] for sublist in order._lists]
    order._len = len(ordered)
    return order


class MemoryEngine(Engine):
    def __init__(
        self, *, event_log_size: int = 10_000, board_pending: bool = False, **_: object
    ) -> None:
        super().__init__()
        # A new process has a new history: cursors of an earlier one must not be trusted.
        self._epoch = secrets.token_hex(4)
        self._log: deque[Event] = deque(maxlen=event_log_size)
        self._seq = 0
        self._applied_keys: OrderedDict[str, None] = OrderedDict()
        # Rows, not BoardEntry objects: a row is its own sort key, and SQL gives rows (an
        # entry is made when one is read).
        self._players: dict[str, BoardRow] = {}
        # An order-statistic structure: rank and insert/remove in O(log n) (a plain sorted
        # list costs O(n) per move, and O(n^2) to load a board row by row).
        self._order: SortedList = SortedList()
        # Rows published while a board_replace reads its rows (None when none runs).
        self._published_meanwhile: list[BoardEntry] | None = None
        # board_pending: this process has not loaded its board from SQL yet (a serving
        # instance starts so, and loads in the background). Until the first board_replace
        # ends, reads raise BoardIncomplete (the caller reads SQL), and publications that
        # touch the board wait for it: their ranks are ranks on the whole board.
        self._board_loaded: asyncio.Event | None = asyncio.Event() if board_pending else None
        self._connections: dict[str, int] = {}
        self._pollers: dict[str, float] = {}
        self._online: set[str] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_pollers())

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def ping(self) -> bool:
        return True

    @property
    def epoch(self) -> str:
        return self._epoch

    # log -----------------------------------------------------------------------------------
    async def publish(self, publication: Publication) -> list[Event]:
        if self._board_loaded is not None and (publication.board or publication.ranked_players()):
            await self._board_loaded.wait()
        if publication.key is not None:
            if publication.key in self._applied_keys:
                return []
            self._applied_keys[publication.key] = None
            if len(self._applied_keys) > _KEYS_REMEMBERED:
                self._applied_keys.popitem(last=False)
        ranked = publication.ranked_players()
        before = {pid: self._rank(pid) for pid in ranked}
        for entry in publication.board:
            self._put(entry)
        ranks: RankTable = {pid: (before[pid], self._rank(pid)) for pid in ranked}
        events = []
        for draft in publication.events:
            self._seq += 1
            event = build_event(self._epoch, self._seq, draft, publication.ts, ranks)
            self._log.append(event)
            events.append(event)
        if events:
            self._deliver(events)
        return events

    async def head(self) -> int:
        return self._seq

    async def read_after(self, seq: int, limit: int) -> list[Event]:
        if seq > self._seq or seq < 0:
            raise LogGap("unknown")
        if seq == self._seq:
            return []
        oldest = self._log[0].seq if self._log else self._seq + 1
        if seq + 1 < oldest:
            raise LogGap("expired")
        start = seq + 1 - oldest
        return [self._log[i] for i in range(start, min(start + limit, len(self._log)))]

    # board ---------------------------------------------------------------------------------
    def _put(self, entry: BoardEntry) -> None:
        if self._published_meanwhile is not None:
            self._published_meanwhile.append(entry)
        current = self._players.get(entry.player_id)
        if current is not None:
            if current[-1] >= entry.version:
                return
            self._order.remove(current)
        row = board_row(entry)
        self._players[entry.player_id] = row
        self._order.add(row)

    def _rank(self, player_id: str) -> int | None:
        """1-based rank on the board, in O(log n); None for a player not on it."""
        row = self._players.get(player_id)
        if row is None:
            return None
        return int(self._order.bisect_left(row)) + 1

    def _slice(self, start: int, end: int) -> list[Ranked]:
        # islice walks the SortedList once: O(log n + page), where indexing each row would
        # be O(page * log n).
        rows = self._order.islice(start, end)
        return [(rank, row_entry(row)) for rank, row in enumerate(rows, start + 1)]

    def _check_loaded(self) -> None:
        if self._board_loaded is not None:
            raise BoardIncomplete("the board is still loading from SQL")

    async def board_page(self, offset: int, limit: int) -> tuple[list[Ranked], int]:
        self._check_loaded()
        return self._slice(offset, offset + limit), len(self._order)

    async def board_player(self, player_id: str) -> Ranked | None:
        self._check_loaded()
        rank = self._rank(player_id)
        if rank is None:
            return None
        return rank, row_entry(self._players[player_id])

    async def board_around(self, player_id: str, radius: int) -> list[Ranked]:
        found = await self.board_player(player_id)
        if found is None:
            return []
        index = found[0] - 1
        start, end = max(0, index - radius), min(len(self._order), index + radius + 1)
        return self._slice(start, end)

    async def board_replace(self, load: BoardLoader, *, take_over: bool = True) -> bool:
        # One process owns this board: no other replace to take over or to wait for.
        # Readers see the old board until the new one is swapped in (or BoardIncomplete
        # before the first load of a pending board). As in Redis, rows published while
        # `load()` reads SQL go into the new board too (their versions decide).
        published: list[BoardEntry] = []
        self._published_meanwhile = published
        try:
            rows = loaded_rows(await load())
        finally:
            self._published_meanwhile = None
        # SQL has one row per player; a row published meanwhile replaces an older one.
        players = {row[1]: row for row in rows}
        if len(players) != len(rows):  # not from SQL: keep each player's newest row
            players = {}
            for row in rows:
                current = players.get(row[1])
                if current is None or current[-1] < row[-1]:
                    players[row[1]] = row
        for entry in published:
            current = players.get(entry.player_id)
            if current is None or current[-1] < entry.version:
                players[entry.player_id] = board_row(entry)
        ordered = rows if len(players) == len(rows) and not published else [*players.values()]
        self._order = _sorted_list(_board_ordered(ordered))
        self._players = players
        if self._board_loaded is not None:
            self._board_loaded.set()  # held publications go on, in the order they came
            self._board_loaded = None
        return True

    # presence ------------------------------------------------------------------------------
    async def _transition(self, player_id: str) -> None:
        online = self._connections.get(player_id, 0) > 0 or player_id in self._pollers
        if online == (player_id in self._online):
            return
        if online:
            self._online.add(player_id)
        else:
            self._online.discard(player_id)
        name = "player:online" if online else "player:offline"
        await self.publish(
            Publication(events=(presence_draft(name, player_id, len(self._online)),))
        )

    async def presence_enter(self, player_id: str) -> None:
        self._connections[player_id] = self._connections.get(player_id, 0) + 1
        await self._transition(player_id)

    async def presence_leave(self, player_id: str) -> None:
        left = self._connections.get(player_id, 0) - 1
        if left > 0:
            self._connections[player_id] = left
        else:
            self._connections.pop(player_id, None)
        await self._transition(player_id)

    async def presence_poll(self, player_id: str) -> None:
        self._pollers[player_id] = time.monotonic() + POLL_PRESENCE_SECONDS
        await self._transition(player_id)

    async def online_count(self) -> int:
        return len(self._online)

    async def is_online(self, player_id: str) -> bool:
        return player_id in self._online

    async def _sweep_pollers(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for player_id in [p for p, until in self._pollers.items() if until < now]:
                del self._pollers[player_id]
                await self._transition(player_id)

    # limits (PROTOCOL 3.6) --------------------------------------------------------------------
    @functools.cached_property
    def _limits(self) -> MemoryLimits:
        return MemoryLimits()

    async def rate_limit(self, key: str, rate: int) -> RateDecision:
        return self._limits.rate_limit(key, rate)

    async def stream_admit(self, subject: str, limit: int) -> bool:
        return self._limits.admit(subject, limit)

    async def stream_release(self, subject: str) -> None:
        self._limits.release(subject)
