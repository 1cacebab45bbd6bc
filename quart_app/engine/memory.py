"""The embedded engine: board, log and presence in this process (one instance only)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from collections import OrderedDict, deque

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from ..domain.board import board_order
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
from .board_state import BoardLoader
from .limits_memory import MemoryLimits
from .rate_limit import RateDecision

# How many idempotency keys are remembered; a replay older than this would be re-applied,
# and the outbox never replays anything that old (it deletes rows once published).
_KEYS_REMEMBERED = 100_000


def _sort_key(entry: BoardEntry) -> tuple[float, str]:
    return board_order(entry.rating, entry.player_id)


class MemoryEngine(Engine):
    def __init__(self, *, event_log_size: int = 10_000, **_: object) -> None:
        super().__init__()
        # A new process has a new history: cursors of an earlier one must not be trusted.
        self._epoch = secrets.token_hex(4)
        self._log: deque[Event] = deque(maxlen=event_log_size)
        self._seq = 0
        self._applied_keys: OrderedDict[str, None] = OrderedDict()
        self._players: dict[str, BoardEntry] = {}
        # An order-statistic structure: rank and insert/remove in O(log n) (a plain sorted
        # list costs O(n) per move, and O(n^2) to load a board row by row).
        self._order: SortedList = SortedList()
        # Rows published while a board_replace reads its rows (None when none runs).
        self._published_meanwhile: list[BoardEntry] | None = None
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
            if current.version >= entry.version:
                return
            self._order.remove(_sort_key(current))
        self._players[entry.player_id] = entry
        self._order.add(_sort_key(entry))

    def _rank(self, player_id: str) -> int | None:
        """1-based rank on the board, in O(log n); None for a player not on it."""
        entry = self._players.get(player_id)
        if entry is None:
            return None
        return int(self._order.bisect_left(_sort_key(entry))) + 1

    def _ranked(self, index: int) -> Ranked:
        return index + 1, self._players[self._order[index][1]]

    async def board_page(self, offset: int, limit: int) -> tuple[list[Ranked], int]:
        end = min(offset + limit, len(self._order))
        return [self._ranked(i) for i in range(offset, end)], len(self._order)

    async def board_player(self, player_id: str) -> Ranked | None:
        rank = self._rank(player_id)
        if rank is None:
            return None
        return rank, self._players[player_id]

    async def board_around(self, player_id: str, radius: int) -> list[Ranked]:
        found = await self.board_player(player_id)
        if found is None:
            return []
        index = found[0] - 1
        start, end = max(0, index - radius), min(len(self._order), index + radius + 1)
        return [self._ranked(i) for i in range(start, end)]

    async def board_replace(self, load: BoardLoader) -> None:
        # This board is never partial (it lives and dies with the process, and the runtime
        # builds it before serving): there is no BoardIncomplete here. As in Redis, rows
        # published while `load()` reads SQL go into the new board too (their versions decide).
        published: list[BoardEntry] = []
        self._published_meanwhile = published
        try:
            entries = await load()
        finally:
            self._published_meanwhile = None
        # The newest version of each player, then one bulk sort (O(n log n)).
        newest: dict[str, BoardEntry] = {}
        for entry in [*entries, *published]:
            current = newest.get(entry.player_id)
            if current is None or current.version < entry.version:
                newest[entry.player_id] = entry
        self._players = newest
        self._order = SortedList(_sort_key(entry) for entry in newest.values())

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
