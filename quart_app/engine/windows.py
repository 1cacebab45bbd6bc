"""Rank windows, live (PROTOCOL 1, 2 and 3.2): per instance, the window rooms wanted here,
re-read only when a board change touches them, at most once per room per COALESCE_SECONDS,
each new window encoded once and pushed to every connection of its room that does not hold
it already (one that subscribed while the window was being re-read got a read of its own).

Which windows a `leaderboard:update` touches is decided from its rows alone (each carries the
player's rank and previous_rank, filled by the engine): no board read for that. Only touched
windows are re-read, once per instance per tick whatever their number of subscribers, and
sent only when their entries differ from the last ones sent. Window events are not in the log:
their `id` is the cursor of the position the read started at (it reflects at least that).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..domain.board import Ranked
from ..domain.windows import (
    BoardChange,
    WindowSpec,
    change_touches,
    covered_ranks,
    is_window_room,
    parse_window,
    rank_moves,
)
from .base import Event, LogGap
from .board_state import BOARD_REBUILT

if TYPE_CHECKING:
    from .hub import Connection, Hub

log = logging.getLogger(__name__)

WINDOW_EVENT = "leaderboard:window"
# PROTOCOL 1: "at most one window per room per 100 ms is fine" under a burst.
COALESCE_SECONDS = 0.1
# A window that only long-pollers want is kept this long after the last poll that named it
# (longer than a poll's longest wait, 30 s).
POLL_INTEREST_SECONDS = 60.0
# How long a long-poll answer waits for a pending window to be re-read (it is due within
# COALESCE_SECONDS plus one board read).
SETTLE_SECONDS = 1.0

PageReader = Callable[[int, int], Awaitable[tuple[list[Ranked], int]]]
AroundReader = Callable[[str, int], Awaitable[list[Ranked]]]
# What a connection given a window read of its own holds: the read's position and entries.
Held = tuple[int, list[dict[str, Any]] | None]
NOTHING: Held = (-1, None)  # its read failed, or was of an older log


class BoardReads(Protocol):
    """Where windows are read: the engine, or the leaderboard service (SQL while the engine's
    board is incomplete after a data loss)."""

    async def board_page(self, offset: int, limit: int) -> tuple[list[Ranked], int]: ...
    async def board_around(self, player_id: str, radius: int) -> list[Ranked]: ...


class Window:
    __slots__ = (
        "spec",
        "entries",
        "covered",
        "event",
        "changed_at",
        "dirty",
        "wanted_at",
        "read_at",
        "reading",
        "fresh",
        "resend",
    )

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.entries: list[dict[str, Any]] | None = None  # None: never read here
        self.covered: tuple[float, float] | None = None
        self.event: Event | None = None
        # The log position of the newest window that differed from the one before.
        self.changed_at = 0
        self.dirty = True
        self.wanted_at = time.monotonic()
        # The loop time its last re-read began: the next one waits COALESCE_SECONDS after.
        self.read_at = -COALESCE_SECONDS
        # A tick is re-reading it: not dirty any more, but its event may be older than the board.
        self.reading = False
        # Connections given a read of their own because the last event was not current (see
        # `current`): the position and entries each holds, until a tick's read catches up.
        self.fresh: dict[Connection, Held] = {}
        # Sent again at its next read even if unchanged: its clients were told stream:reset.
        self.resend = False

    def touched_by(self, change: BoardChange) -> bool:
        if self.entries is None:
            return True
        return change_touches(self.spec, self.covered, change)


def window_rooms(rooms: Iterable[str]) -> list[str]:
    return [room for room in rooms if is_window_room(room)]


class WindowRooms:
    """The window rooms of one hub (see the module's docstring)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._page: PageReader = hub.engine.board_page
        self._around: AroundReader = hub.engine.board_around
        self._windows: dict[str, Window] = {}
        self._epoch: str | None = None
        self._due: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        # Board changes seen while a tick reads: checked against the windows it read.
        self._reading = False
        self._deferred: list[BoardChange] = []
        self._ticked: asyncio.Future[None] | None = None
        # Counters (tests, /metrics): windows read and window events built.
        self.reads = 0
        self.sent = 0
        hub.engine.listen(self._on_events)

    def read_with(self, reads: BoardReads) -> None:
        self._page, self._around = reads.board_page, reads.board_around

    # what is wanted here ---------------------------------------------------------------------
    def _window(self, room: str) -> Window:
        window = self._windows.get(room)
        if window is None:
            spec = parse_window(room)
            assert spec is not None, room  # rooms are validated at the edge (parse_rooms)
            window = self._windows[room] = Window(spec)
        window.wanted_at = time.monotonic()
        return window

    def _wanted(self, window: Window, now: float) -> bool:
        return window.spec.room in self._hub.rooms or now - window.wanted_at < (
            POLL_INTEREST_SECONDS
        )

    # the current windows (subscribe, resume, long-poll) ---------------------------------------
    async def current(self, rooms: Iterable[str], conn: Connection | None = None) -> list[Event]:
        """The window event of each window room among `rooms`, as it is now: the last one
        built when nothing touched it since, else read now (also while a tick re-reads it:
        until that read is published, the last event predates the change that started it).

        `conn`: the connection they are for, registered in those rooms. The ticks skip it
        until it holds them, then push it only a window that differs from what it holds."""
        wanted = [self._window(room) for room in window_rooms(rooms)]
        epoch = self._hub.epoch
        answers: list[tuple[Event, Held | None]] = []
        try:
            for window in wanted:
                if window.event is None or window.dirty or window.reading:
                    answers.append(await self._read_now(window, epoch))
                else:
                    answers.append((window.event, None))
        except BaseException:
            if conn is not None:
                for window in wanted:
                    self._give(window, conn, NOTHING)  # the next tick sends it its window
            raise
        # A connection registered in an older log, given no window since: a stream:reset
        # is queued for it, behind which what it is given now would be dropped.
        reset = conn is not None and conn.windows_held is None and conn.epoch != epoch
        events = []
        for window, (event, held) in zip(wanted, answers, strict=True):
            # No await from here on: what it is given is what it holds when the ticks see it.
            if self._hub.epoch != epoch or reset:
                # Read in the old log, or for a client about to drop it: the new log's window
                # is due to it instead (the next tick sends it), not this one.
                if conn is not None:
                    self._give(window, conn, NOTHING)
                continue
            if held is None or window.changed_at > held[0]:
                event, held = window.event or event, None  # the last one published
            if conn is not None:
                self._give(window, conn, held)
            events.append(event)
        if conn is not None:
            conn.epoch = self._hub.epoch
        return events

    async def _read_now(self, window: Window, epoch: str) -> tuple[Event, Held | None]:
        """A read of `window` for one asker: the event and what it holds (None: the
        window's own event, which a first read here becomes)."""
        position = self._hub.head_seq
        event, entries = await self._read_event(window.spec, position)
        if window.event is None and self._hub.epoch == epoch:
            # The first read here: what the next tick compares with. The window stays
            # dirty, so that tick reads it again (a change during this read is not lost).
            # Nobody holds an older one of it, so none is owed one again.
            self._store(window, event, entries, position)
            window.resend = False
            return event, None
        return event, (position, entries)

    def _give(self, window: Window, conn: Connection, held: Held | None) -> None:
        """`conn` holds `held` of this window (None: its own event) from now on."""
        room = window.spec.room
        if room not in conn.rooms:
            return  # it left the room (or closed) meanwhile
        if held is None or (
            held[1] is not None and held[1] == window.entries and not window.resend
        ):
            window.fresh.pop(conn, None)  # it holds what every other holder holds
        else:
            window.fresh[conn] = held
            window.dirty = True  # the next tick settles it against the board
            self._schedule()
        if conn.windows_held is None:
            conn.windows_held = set()
        conn.windows_held.add(room)

    async def push_current(self, conn: Connection, rooms: Iterable[str]) -> None:
        """Rooms newly joined by a live connection: their current windows."""
        for event in await self.current(rooms, conn):
            conn.push(event)

    def resend_soon(self, conn: Connection) -> None:
        """A conflated connection (PROTOCOL 3.5) dropped its queued windows: the latest ones
        again, once its queue has room (not from inside its push)."""
        rooms = window_rooms(conn.rooms)
        if rooms:
            asyncio.get_running_loop().call_soon(self._resend, conn, rooms)

    def _resend(self, conn: Connection, rooms: list[str]) -> None:
        for room in rooms:
            window = self._windows.get(room)
            if (
                window is None
                or window.event is None
                or conn.closed
                or room not in (conn.windows_held or ())  # its current one is on its way
            ):
                continue
            if conn in window.fresh:
                # It held a read of its own, maybe newer than the last event: the next tick
                # sends it the window as it is then, rather than an older one now.
                self._give(window, conn, NOTHING)
            else:
                conn.push(window.event)

    def forget(self, conn: Connection) -> None:
        """`conn` was told stream:reset: it holds no window until `current` gives it one (the
        ticks skip it meanwhile, as the reset's fresh windows are on their way)."""
        conn.windows_held = None

    # long-poll (PROTOCOL 3.2) -------------------------------------------------------------------
    def poll_timeout(self, rooms: list[str], cursor: str | None, timeout: float) -> float:
        """0 when a window of these rooms changed after the cursor: the poll answers at once."""
        rooms = window_rooms(rooms)
        if not rooms or not cursor:
            return timeout
        try:
            position = self._hub.resume_position(cursor)
        except LogGap:
            return timeout
        for room in rooms:
            window = self._window(room)
            # Never read here (a poller new to this instance): it gets the window now, as a
            # resumed stream does, and from then on this instance watches it for changes.
            if window.event is None or window.changed_at > position:
                return 0.0
        return timeout

    async def add_to_poll(self, body: bytes, rooms: list[str], cursor: str | None) -> bytes:
        """The answer `body` with the windows the poll is owed: all of them without a cursor
        or after a reset; else each one that changed after the cursor's position and is not
        in the answer yet (waiting, briefly, for windows a change in the answer touched)."""
        rooms = window_rooms(rooms)
        if not rooms:
            return body
        fresh = not cursor or b'"event":"stream:reset"' in body
        position = 0
        if not fresh:
            try:
                position = self._hub.resume_position(cursor or "")
            except LogGap:
                fresh = True
        if fresh:
            owed = await self.current(rooms)
        else:
            await self.settled(rooms)
            owed = []
            for room in rooms:
                window = self._window(room)
                if window.event is not None and window.changed_at > position:
                    owed.append(window.event)
        added = [e.text.encode() for e in owed if e.text.encode() not in body]
        if not added:
            return body
        head, sep, tail = body.partition(b'],"cursor":')
        if not sep:
            return body
        joiner = b"," if head.endswith(b"}") else b""
        return head + joiner + b",".join(added) + sep + tail

    async def settled(self, rooms: Iterable[str]) -> None:
        """Until none of these windows awaits a re-read (at most SETTLE_SECONDS)."""
        windows = [self._window(room) for room in rooms]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_SECONDS):
                while self._reading or any(w.dirty for w in windows):
                    if self._ticked is None:
                        self._ticked = asyncio.get_running_loop().create_future()
                    self._schedule()
                    await asyncio.shield(self._ticked)

    # board changes ------------------------------------------------------------------------------
    def _on_events(self, events: list[Event]) -> None:
        """Engine listener (after the hub's fan-out): mark the windows these changes touch."""
        if self._epoch != self._hub.epoch:  # a new log: old positions mean nothing
            fresh = self._epoch is not None  # clients were told stream:reset: fresh windows
            self._epoch = self._hub.epoch
            for window in self._windows.values():
                window.changed_at = 0
                window.dirty = True
                window.resend = window.resend or fresh
                # Reads of the old log: each of them is sent the new log's window.
                window.fresh = dict.fromkeys(window.fresh, NOTHING)
        if not self._windows:
            return
        for event in events:
            if event.name == BOARD_REBUILT:
                for window in self._windows.values():
                    window.dirty = True
            elif event.name == "leaderboard:update":
                change = BoardChange.of(rank_moves(json.loads(event.text)["data"]))
                if self._reading:
                    self._deferred.append(change)
                else:
                    self._mark(change)
        if any(window.dirty for window in self._windows.values()):
            self._schedule()

    def _mark(self, change: BoardChange) -> None:
        for window in self._windows.values():
            if not window.dirty and window.touched_by(change):
                window.dirty = True

    def _schedule(self) -> None:
        """A tick when the first dirty window may be read again: at once for a window not
        read in the last COALESCE_SECONDS (each room is coalesced on its own, so a quiet
        window is not held back by a busy one)."""
        if self._task is not None:
            return  # a tick is running: it schedules the next one itself
        loop = asyncio.get_running_loop()
        dirty = [w.read_at for w in self._windows.values() if w.dirty]
        if not dirty:
            return
        at = max(loop.time(), min(dirty) + COALESCE_SECONDS)
        if self._due is not None:
            if self._due.when() <= at:
                return
            self._due.cancel()
        self._due = loop.call_at(at, self._start_tick)

    def _start_tick(self) -> None:
        self._due = None
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        hub = self._hub
        started = asyncio.get_running_loop().time()
        now = time.monotonic()
        for room, window in list(self._windows.items()):
            if not self._wanted(window, now):
                del self._windows[room]
        ready = started - COALESCE_SECONDS + 0.001  # (timer slack)
        due = [w for w in self._windows.values() if w.dirty and w.read_at <= ready]
        position, epoch = hub.head_seq, hub.epoch
        for window in due:
            window.dirty = False
            window.read_at = started
            window.reading = True
        self._reading = True
        try:
            read = await asyncio.gather(
                *(self._read_event(w.spec, position) for w in due), return_exceptions=True
            )
        finally:
            self._reading = False
            self._task = None
            for window in due:
                window.reading = False
        for window, outcome in zip(due, read, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("window %s not read (%r): retried", window.spec.room, outcome)
                window.dirty = True
            elif hub.epoch != epoch:
                window.dirty = True  # read across a new log: read again at its positions
            else:
                self._publish(window, *outcome, position)
        deferred, self._deferred = self._deferred, []
        for change in deferred:
            self._mark(change)
        ticked, self._ticked = self._ticked, None
        if ticked is not None and not ticked.done():
            ticked.set_result(None)
        if any(window.dirty for window in self._windows.values()):
            self._schedule()

    def _store(
        self, window: Window, event: Event, entries: list[dict[str, Any]], position: int
    ) -> None:
        window.entries = entries
        window.covered = covered_ranks(window.spec, entries)
        window.event = event
        window.changed_at = position

    def _publish(
        self,
        window: Window,
        event: Event,
        entries: list[dict[str, Any]],
        position: int,
    ) -> None:
        if position < window.changed_at:  # older than a first read stored meanwhile
            window.dirty = window.dirty or bool(window.fresh)
            return
        first = window.entries is None  # nobody here holds an older one: nothing to push
        changed = entries != window.entries or window.resend
        if changed:
            self._store(window, event, entries, position)
            window.resend = False
        fresh, window.fresh = window.fresh, {}
        room = window.spec.room
        members = self._hub.rooms.get(room, set())
        # Unchanged, only connections holding reads of their own may be owed it (a room may
        # hold 10,000 connections; its fresh holders are few).
        owed = tuple(members) if changed else [conn for conn in fresh if conn in members]
        for conn in owed:
            if conn.windows_held is None or room not in conn.windows_held:
                continue  # its current window is on its way (see `current`)
            given = fresh.get(conn)
            if given is None:
                if changed and not first:
                    conn.push(event)
            elif given[1] == entries:
                pass  # it holds these entries already
            elif given[0] > position:
                window.fresh[conn] = given  # it holds a newer read: the next tick settles it
            else:
                conn.push(event)
        if window.fresh:
            window.dirty = True
        if changed and not first:
            self.sent += 1
            self._hub.polls._on_events([event])  # long-pollers waiting on this room

    # reading -------------------------------------------------------------------------------------
    async def _read_event(
        self, spec: WindowSpec, position: int
    ) -> tuple[Event, list[dict[str, Any]]]:
        self.reads += 1
        if self._epoch is None:
            self._epoch = self._hub.epoch  # a new log before any event here is still news
        if spec.player_id is None:
            ranked, total = await self._page(0, spec.size)
        else:
            ranked = await self._around(spec.player_id, spec.size)
            total = (await self._page(0, 1))[1]
        entries = [entry.as_entry(rank) for rank, entry in ranked]
        cursor = self._hub.cursor(position)
        text = json.dumps(
            {
                "id": cursor,
                "rooms": [spec.room],
                "event": WINDOW_EVENT,
                "data": {"window": spec.room, "entries": entries, "total": total},
                "ts": int(time.time() * 1000),
            },
            separators=(",", ":"),
        )
        return Event(0, cursor, (spec.room,), WINDOW_EVENT, text), entries
