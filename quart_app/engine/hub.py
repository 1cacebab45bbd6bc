"""Rooms, connections and their bounded queues: where each event fans out to its receivers.

The engine hands the hub every new event once, in order. The hub appends the shared Event
object to the queue of each connection subscribed to any of its rooms (once per connection,
whatever the number of rooms it matches) and wakes the connection; the connection's
transport then takes everything pending in one go and writes it as one chunk. The work per
event is done once (encoding lives on the Event); the work per delivery is a list append.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ..domain.ids import GLOBAL_BOARD
from .base import Engine, EngineUnavailable, Event, LogGap
from .board_state import BOARD_REBUILT, BoardReader
from .cursor import BadCursor, decode, encode
from .poll_answers import PollAnswers
from .windows import WindowRooms

log = logging.getLogger(__name__)

# Events read from the log per step while a connection catches up.
CATCH_UP_PAGE = 500

# Entries in the snapshot sent to board watchers after the log restarted.
DEFAULT_SNAPSHOT_TOP = 100

# The longest a burst may hold back a flush (see Hub._schedule_flush).
MAX_FLUSH_DELAY = 0.025

# Board state (PROTOCOL 3.5): over its send budget, a connection drops these for one fresh,
# conflated snapshot. Everything else is critical: never dropped, never reordered.
BOARD_STATE = frozenset({"leaderboard:initial", "leaderboard:update", "leaderboard:window"})

# Pushed to every connection each heartbeat period: SSE writes it as a `: ping` comment
# (proxies close idle streams), the other transports skip it.
HEARTBEAT = Event(0, "", (), ":ping", "")


class Closed(Exception):
    """The connection is over; `reason` says why ("slow", "expired", "gone", "shutdown",
    "drain": the instance is draining and the client should resume elsewhere)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sink(Protocol):
    """A socket the hub may write to directly, without a task switch per write."""

    def write(self, batch: list[Event]) -> None: ...
    def closing(self) -> bool: ...
    def congested(self) -> bool: ...
    def when_drained(self, callback: Callable[[], None]) -> None: ...
    def cancel(self) -> None: ...


class Reset(Exception):
    """The client's position cannot be continued; `reason` is "expired" or "unknown".
    The connection has moved to the head of the log: send stream:reset and a snapshot."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Connection:
    """One subscriber (an SSE stream, a WebSocket, or one long-poll request).

    Its queue holds shared Event objects (plus, rarely, one-off snapshot events). Its send
    budget is `limit` events and `byte_limit` bytes (of envelope text). Over budget, queued
    board state is dropped for one conflated snapshot (see _relieve); when that is not enough
    the client is too slow: the connection is closed with reason "slow" and its writer, if
    stuck on a full socket, is cancelled, so memory stays bounded.
    """

    __slots__ = (
        "id",
        "sub",
        "rooms",
        "expires_at",
        "last_seq",
        "_queue",
        "_limit",
        "_waiter",
        "_catching_up",
        "_hub",
        "closed",
        "writer",
        "presence",
        "sink",
        "_dirty",
        "_bytes",
        "_byte_limit",
        "conflate",
        "_conflating",
        "_conflated_at",
        "opened",
        "windows_held",
        "epoch",
    )

    def __init__(
        self,
        hub: Hub,
        sub: str | None,
        rooms: Iterable[str],
        limit: int,
        expires_at: float | None,
        after_seq: int,
        byte_limit: int = 1 << 20,
    ) -> None:
        self.id = f"{hub.instance_id}-{secrets.token_urlsafe(9)}"
        self.sub = sub
        # A tuple, not a set: a quarter of the memory, and a connection has few rooms.
        self.rooms: tuple[str, ...] = tuple(dict.fromkeys(rooms))
        self.expires_at = expires_at
        # The log position this connection has been given everything up to.
        self.last_seq = after_seq
        self._queue: list[Event] = []
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None
        self._catching_up = False
        self._hub = hub
        self.closed: str | None = None
        # The task serving this connection; cancelled when the hub ends a connection whose
        # task cannot otherwise notice (blocked on a full socket, or waiting on the client).
        self.writer: asyncio.Task[Any] | None = None
        self.presence = False
        # Set once the connection is live on a raw socket: the hub then writes to it itself.
        self.sink: Sink | None = None
        self._dirty = False
        # The send budget in bytes: the envelope text of what is queued.
        self._bytes = 0
        self._byte_limit = byte_limit
        # Whether board state may be conflated; a long-poll answers with what fits instead.
        self.conflate = True
        # While a conflated snapshot is being read nothing is written (it must come first);
        # then the log position it reflects, for last_seq once it is taken.
        self._conflating = False
        self._conflated_at = 0
        # The hub's count of opened connections when this one registered (shared reads).
        self.opened = 0
        # The window rooms whose current window it was given (WindowRooms.current): until
        # then, a window changing is not pushed to it (its current one is on its way).
        self.windows_held: set[str] | None = None
        # The log it was registered in (a new log's stream:reset is then queued for it).
        self.epoch = hub.epoch

    # called by the hub, on the event loop -------------------------------------------------
    def push(self, event: Event) -> None:
        if self.closed:
            return
        self._queue.append(event)
        self._bytes += len(event.text)
        if (len(self._queue) > self._limit or self._bytes > self._byte_limit) and not (
            self._relieve()
        ):
            self.close("slow")
            return
        if self.sink is not None:
            if not self._dirty:
                self._dirty = True
                self._hub._schedule_flush(self)
            return
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = reason
        self._queue.clear()
        self._bytes = 0
        if self.sink is not None:
            self.sink.cancel()
        self._hub._detach(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif (
            (reason in ("slow", "drain") or self.sink is not None)
            and self.writer is not None
            and self.writer is not asyncio.current_task()
        ):
            # Stuck on a full socket, or waiting on the client while the hub writes: only
            # cancelling gets the task to finish the response.
            self.writer.cancel()

    # called by the transport ---------------------------------------------------------------
    async def next_batch(self, timeout: float | None = None) -> list[Event]:
        """Everything pending, oldest first; waits until there is something. [] after
        `timeout`. Raises Closed when the connection is over, Reset when catching up found
        the client's position gone from the log."""
        while True:
            if self.closed:
                raise Closed(self.closed)
            if self._catching_up:
                batch = await self.catch_up_step()
                if batch:
                    return batch
                continue
            if self._queue and not self._conflating:
                fresh = self._take()
                if fresh:
                    return fresh
                continue
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                if timeout is None:
                    await waiter
                else:
                    async with asyncio.timeout(timeout):
                        await waiter
            except TimeoutError:
                return []
            finally:
                self._waiter = None

    def _take(self) -> list[Event]:
        """Everything queued, less what this connection was already given.

        Live events may repeat what a catch-up read from the log, and not only on the first
        take: on the Redis engine the log can be ahead of the live feed, whose lagging events
        then arrive in any number of deliveries. The queue's seqs increase (the hub fans out
        in order), so checking its first log event tells whether anything must be dropped.
        """
        batch, self._queue = self._queue, []
        last = self.last_seq
        for event in batch:
            if event.seq:
                if event.seq <= last:
                    batch = [e for e in batch if e.seq > last or e.seq == 0]
                break
        for event in reversed(batch):
            if event.seq:
                self.last_seq = event.seq
                break
        self._bytes = 0
        if self._conflated_at:  # the batch holds a conflated snapshot: its position is given
            self.last_seq = max(self.last_seq, self._conflated_at)
            self._conflated_at = 0
        return batch

    def attach(self, sink: Sink) -> None:
        """From now on the hub writes this connection's events to `sink` itself."""
        self.sink = sink
        if self._queue and not self._dirty:
            self._dirty = True
            self._hub._schedule_flush(self)

    def flush(self) -> None:
        self._dirty = False
        sink = self.sink
        if self.closed or sink is None or not self._queue or self._conflating:
            return
        if sink.closing():
            self.close("gone")
        elif sink.congested():  # stays queued (within budget) until the socket drains
            sink.when_drained(self._drained)
        else:
            batch = self._take()
            if batch:
                sink.write(batch)

    def _drained(self) -> None:
        if not self._dirty and self._queue:
            self._dirty = True
            self._hub._schedule_flush(self)

    def _wake(self) -> None:
        if self.sink is not None:
            self._drained()
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
            self._waiter = None

    # over budget -------------------------------------------------------------------------------
    def _drop_board_state(self) -> bool:
        queue = self._queue
        kept = [event for event in queue if event.name not in BOARD_STATE]
        if len(kept) == len(queue):
            return False
        self._queue = kept
        self._bytes = sum(len(event.text) for event in kept)
        return True

    def _over_budget(self) -> bool:
        return len(self._queue) > self._limit or self._bytes > self._byte_limit

    def _relieve(self) -> bool:
        """Over budget: drop the queued board state (a board watcher gets one conflated
        snapshot in its place, see Hub._conflate). True when that brought the connection back
        within budget; False: it is too slow."""
        if not self.conflate or self._catching_up or self._conflating:
            return False
        if not self._drop_board_state() or self._over_budget():
            return False
        if GLOBAL_BOARD in self.rooms:
            self._conflating = True
            self._hub._conflate(self)
        self._hub.windows.resend_soon(self)  # its dropped windows, fresh (PROTOCOL 3.5)
        return True

    async def _conflated_snapshot(self) -> None:
        """Put one fresh `leaderboard:initial` ("conflated": true) where the dropped board
        state was: after every queued event up to the position it reflects, before those
        after it. Nothing is written meanwhile, so that place is still in the queue."""
        hub = self._hub
        epoch = hub.epoch
        if self.closed:
            self._conflating = False
            return
        self._drop_board_state()  # board events fanned out since the drop: also before us
        cut, position = len(self._queue), hub.head_seq
        try:
            snapshot = conflated(await hub.snapshot(DEFAULT_SNAPSHOT_TOP))
        except Exception:
            log.exception("conflated snapshot failed: ending the stream as slow")
            self._conflating = False
            self.close("slow")
            return
        self._conflating = False
        if self.closed or hub.epoch != epoch:
            return  # gone, or reset to the new log's start (which sends its own snapshot)
        self._queue.insert(cut, snapshot)
        self._bytes += len(snapshot.text)
        self._conflated_at = position
        self._wake()

    def reset_position(self) -> None:
        """The log restarted: what is queued belongs to a history that is gone."""
        self._queue.clear()
        self._bytes = 0
        self.last_seq = 0
        self._catching_up = False
        self._conflated_at = 0

    def begin_catch_up(self) -> None:
        self._catching_up = True

    @property
    def catching_up(self) -> bool:
        return self._catching_up

    async def catch_up_step(self) -> list[Event]:
        """The next page of missed events of this connection's rooms (maybe empty)."""
        try:
            page = await self._hub.read_after(self.last_seq, self.opened)
        except EngineUnavailable:
            # The log cannot be read (Redis gone): the stream ends, and the client resumes
            # with its cursor, here or elsewhere, once the log answers again.
            self.close("unavailable")
            raise Closed("unavailable") from None
        except LogGap as gap:
            self._catching_up = False
            self._queue.clear()
            self.last_seq = self._hub.head_seq
            raise Reset(gap.reason) from None
        if len(page) < CATCH_UP_PAGE:
            self._catching_up = False
        if page:
            self.last_seq = page[-1].seq
        rooms = self.rooms
        return [event for event in page if any(room in rooms for room in event.rooms)]


def conflated(snapshot: Event) -> Event:
    """A copy of a `leaderboard:initial` whose data says "conflated": true (PROTOCOL 3.5): it
    replaces board updates the client skipped. Rare (a lagging client), so re-encoding is fine."""
    envelope = json.loads(snapshot.text)
    envelope["data"]["conflated"] = True
    text = json.dumps(envelope, separators=(",", ":"))
    return Event(0, snapshot.cursor, snapshot.rooms, snapshot.name, text)


class Hub:
    """The rooms of one instance."""

    def __init__(
        self,
        engine: Engine,
        *,
        queue_limit: int,
        queue_bytes: int = 1 << 20,
        heartbeat_seconds: float = 15.0,
    ) -> None:
        self.engine = engine
        self.instance_id = engine.instance_id
        self.queue_limit = queue_limit
        self.queue_bytes = queue_bytes
        self.conflated = 0  # conflated snapshots sent (/metrics)
        self._conflations: set[asyncio.Task[None]] = set()
        self.heartbeat_seconds = heartbeat_seconds
        self.connections: dict[str, Connection] = {}
        self.rooms: dict[str, set[Connection]] = {}
        # The newest sequence number the hub has fanned out: everything up to it that matched
        # a registered connection's rooms is in that connection's queue.
        self.head_seq = 0
        # Counters for /metrics.
        self.deliveries = 0
        self.events = 0
        self.slow_closed = 0
        self.last_flush_seconds = 0.0
        # Told of each flush (its events that had receivers, its duration): the metrics.
        self.observe_flush: Callable[[list[Event], float], None] | None = None
        self._unwritten: list[Event] = []
        self._ticker: asyncio.Task[None] | None = None
        self._to_flush: list[Connection] = []
        self._next_flush_at = 0.0
        self._snapshots: dict[int, Event] = {}
        # Where snapshots read the board (see read_board_with); a generation that every board
        # refresh bumps, so a cached snapshot never outlives the board it was read from.
        self._read_board: BoardReader = engine.board_page
        self._board_generation = 0
        self.epoch = ""
        self._resets: set[asyncio.Task[None]] = set()
        # PROTOCOL 3.7: set once draining began; connections opened after that are born closed.
        self.draining = False
        # Called each housekeeping tick with time.monotonic() (the WebSocket dead-peer pings).
        self.tickers: list[Callable[[float], None]] = []
        # Catch-up reads in flight, by position: (opens counted when issued, the read).
        self._opened = 0
        self._reads: dict[int, tuple[int, asyncio.Future[list[Event]]]] = {}
        engine.listen(self._fan_out)
        engine.listen(self._watch_board_refresh)  # after the fan-out: watchers have it all
        # Long-pollers: no connection each, they wait in groups (listens after the fan-out).
        self.polls = PollAnswers(self)
        # Rank windows (leaderboard:top:n, leaderboard:around:id:r): listens after the polls.
        self.windows = WindowRooms(self)

    def _schedule_flush(self, conn: Connection) -> None:
        # Connections that got events are written together, in one write each. Normally at
        # once (next loop iteration); but when flushes come back to back (a burst), the next
        # one waits as long as the last one took, so writing never takes more than half the
        # CPU from accepting events, and each write carries more of them.
        if not self._to_flush:
            loop = asyncio.get_running_loop()
            delay = self._next_flush_at - loop.time()
            if delay > 0.0002:
                loop.call_later(delay, self._flush)
            else:
                loop.call_soon(self._flush)
        self._to_flush.append(conn)

    def _flush(self) -> None:
        started = time.perf_counter()
        conns, self._to_flush = self._to_flush, []
        for conn in conns:
            conn.flush()
        cost = self.last_flush_seconds = time.perf_counter() - started
        written, self._unwritten = self._unwritten, []
        if self.observe_flush is not None:
            self.observe_flush(written, cost)
        self._next_flush_at = asyncio.get_running_loop().time() + min(cost, MAX_FLUSH_DELAY)

    async def start(self) -> None:
        # Redis down at start: begin at an unknown position; the first events carry the log's
        # epoch, which the hub then adopts as after a Redis restart (_new_epoch).
        with contextlib.suppress(EngineUnavailable):
            self.head_seq = await self.engine.head()
        self.epoch = self.engine.epoch
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for task in list(self._conflations):
            task.cancel()
        self.polls.release_all()
        for conn in list(self.connections.values()):
            conn.close("shutdown")

    async def drain(self, seconds: float) -> None:
        """PROTOCOL 3.7: end every connection, streams spread evenly over `seconds`.

        Long-polls (no writer task) answer at once: each is one request, cheap to repeat
        elsewhere. Streams end in random order, one every seconds/n, so the clients that
        come back to the other instances arrive as a steady trickle, not a storm. Returns
        when the last one was told (about `seconds` later)."""
        self.draining = True
        self.polls.release_all()  # pending long-polls answer now (new ones see `draining`)
        loop = asyncio.get_running_loop()
        streams: list[Connection] = []
        for conn in list(self.connections.values()):
            if conn.writer is None:
                conn.close("drain")
            else:
                streams.append(conn)
        random.shuffle(streams)
        start, count = loop.time(), len(streams)
        for index, conn in enumerate(streams):
            # Centred in its slot: the first and the last are half a slot from the ends.
            delay = start + seconds * (index + 0.5) / count - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            conn.close("drain")
        for conn in list(self.connections.values()):  # opened while the drain began
            conn.close("drain")

    # fan-out --------------------------------------------------------------------------------
    def _fan_out(self, events: list[Event]) -> None:
        if events and not events[0].cursor.startswith(self.epoch + "."):
            self._new_epoch(events[0].cursor.rpartition(".")[0])
        rooms = self.rooms
        delivered = 0
        for event in events:
            if event.seq <= self.head_seq and event.seq != 0:
                continue
            self.head_seq = event.seq
            self.events += 1
            if len(event.rooms) == 1:
                receivers: Iterable[Connection] = rooms.get(event.rooms[0], ())
            else:
                union: set[Connection] = set()
                for room in event.rooms:
                    members = rooms.get(room)
                    if members:
                        union.update(members)
                receivers = union
            for conn in tuple(receivers):
                conn.push(event)
                delivered += 1
            if receivers and self._to_flush:  # a flush is due: it will write this event
                self._unwritten.append(event)
        self.deliveries += delivered

    def _new_epoch(self, epoch: str) -> None:
        """The log lost its history (Redis lost its data): every client's position is gone.
        Tell each one (stream:reset "unknown", then a snapshot where it watches the board)
        and carry on from the new log's start."""
        log.warning("event log epoch changed (%s -> %s): resetting every stream", self.epoch, epoch)
        self.epoch, self.head_seq = epoch, 0
        self._board_generation += 1
        self._snapshots.clear()
        reset = self.stream_event("stream:reset", {"reason": "unknown"}, 0)
        for conn in list(self.connections.values()):
            conn.reset_position()
            conn.push(reset)
        task = asyncio.get_running_loop().create_task(self._send_snapshots())
        self._resets.add(task)
        task.add_done_callback(self._resets.discard)

    async def _send_snapshots(self) -> None:
        """A fresh `leaderboard:initial` to every board watcher. Read again while events were
        fanned out during the read: pushed after those events, the snapshot must reflect
        them, or a watcher would end on rows older than what it was already sent."""
        for _ in range(20):
            head, generation = self.head_seq, self._board_generation
            snapshot = await self.snapshot(DEFAULT_SNAPSHOT_TOP)
            if (head, generation) == (self.head_seq, self._board_generation):
                break
        for conn in list(self.rooms.get(GLOBAL_BOARD, ())):
            conn.push(snapshot)

    # board refreshes ----------------------------------------------------------------------------
    def read_board_with(self, reader: BoardReader) -> None:
        """Read snapshots through `reader` (the leaderboard service: the engine's board, or SQL
        while that board is incomplete after a data loss) instead of the engine alone."""
        self._read_board = reader
        self._snapshots.clear()

    def _watch_board_refresh(self, events: list[Event]) -> None:
        """A rebuild finished somewhere in the cluster (its `board:rebuilt` marker reached the
        log): drop cached snapshots and send every board watcher here the new board."""
        if any(event.name == BOARD_REBUILT for event in events):
            self.refresh_board()

    def refresh_board(self) -> None:
        self._board_generation += 1
        self._snapshots.clear()
        task = asyncio.get_running_loop().create_task(self._send_snapshots())
        self._resets.add(task)
        task.add_done_callback(self._resets.discard)

    def _conflate(self, conn: Connection) -> None:
        self.conflated += 1
        task = asyncio.get_running_loop().create_task(conn._conflated_snapshot())
        self._conflations.add(task)
        task.add_done_callback(self._conflations.discard)

    # connections ------------------------------------------------------------------------------
    def open(
        self,
        sub: str | None,
        rooms: Iterable[str],
        expires_at: float | None,
        after_seq: int | None = None,
    ) -> Connection:
        """Register a connection. With `after_seq`, it first catches up from the log
        (events after that position, of its rooms), then goes live with no gap or repeat."""
        conn = Connection(
            self,
            sub,
            rooms,
            self.queue_limit,
            expires_at,
            self.head_seq if after_seq is None else after_seq,
            self.queue_bytes,
        )
        self._opened += 1
        conn.opened = self._opened
        self.connections[conn.id] = conn
        for room in conn.rooms:
            self.rooms.setdefault(room, set()).add(conn)
        if after_seq is not None:
            conn.begin_catch_up()
        if self.draining:  # the caller finds it closed: a poll answers at once, a stream ends
            conn.close("drain")
        return conn

    def join(self, conn: Connection, rooms: Iterable[str]) -> list[str]:
        """Add rooms to a live connection; returns the rooms newly joined."""
        added = [room for room in dict.fromkeys(rooms) if room not in conn.rooms]
        conn.rooms += tuple(added)
        for room in added:
            self.rooms.setdefault(room, set()).add(conn)
        return added

    def leave(self, conn: Connection, rooms: Iterable[str]) -> None:
        gone = set(rooms)
        conn.rooms = tuple(room for room in conn.rooms if room not in gone)
        if conn.windows_held:
            conn.windows_held -= gone
        for room in gone:
            members = self.rooms.get(room)
            if members is not None:
                members.discard(conn)
                if not members:
                    del self.rooms[room]

    def _detach(self, conn: Connection) -> None:
        if conn.closed == "slow":
            self.slow_closed += 1
        self.connections.pop(conn.id, None)
        self.leave(conn, list(conn.rooms))

    async def read_after(self, seq: int, opened: int) -> list[Event]:
        """The log after `seq` (a catch-up page), one read shared by every connection that
        resumes from the same position at the same time: a thousand clients of a drained
        instance arrive with the same cursor. A connection may join a read only if the read
        was issued after it registered: what was fanned out before it registered must be in
        what the read returns (an older read might have been answered before it)."""
        shared = self._reads.get(seq)
        if shared is None or shared[0] < opened:
            read = asyncio.ensure_future(self.engine.read_after(seq, CATCH_UP_PAGE))
            shared = self._reads[seq] = (self._opened, read)
            read.add_done_callback(lambda done: self._read_done(seq, done))
        return await asyncio.shield(shared[1])

    def _read_done(self, seq: int, read: asyncio.Future[list[Event]]) -> None:
        current = self._reads.get(seq)
        if current is not None and current[1] is read:
            del self._reads[seq]
        if not read.cancelled():
            read.exception()  # retrieved: every waiter may have left

    # snapshots and cursors ---------------------------------------------------------------------
    def cursor(self, seq: int | None = None) -> str:
        return encode(self.engine.epoch, self.head_seq if seq is None else seq)

    def resume_position(self, cursor: str) -> int:
        """The log position of a client's cursor; LogGap("unknown") when it is not ours."""
        try:
            epoch, seq = decode(cursor)
        except BadCursor:
            raise LogGap("unknown") from None
        if epoch != self.engine.epoch:
            raise LogGap("unknown")
        return seq

    def stream_event(self, name: str, data: dict[str, Any], position: int) -> Event:
        """An event that is not in the log (stream:open, stream:reset). Its id is the cursor of
        `position`, the log position it reflects, so a client (or EventSource on its own) that
        resumes from it misses nothing. Seq 0: never skipped as already seen."""
        cursor = self.cursor(position)
        text = json.dumps(
            {"id": cursor, "rooms": [], "event": name, "data": data, "ts": int(time.time() * 1000)},
            separators=(",", ":"),
        )
        return Event(0, cursor, (), name, text)

    async def snapshot(self, top: int) -> Event:
        """`leaderboard:initial`: the top of the board, carrying the cursor it reflects.

        Shared by every client that asks at the same log position (a thousand browsers
        reconnecting at once cost one board read and one encoding)."""
        cursor, generation = self.cursor(), self._board_generation
        cached = self._snapshots.get(top)
        if cached is not None and cached.cursor == cursor:
            return cached
        ranked, total = await self._read_board(0, top)
        data = {"entries": [entry.as_entry(rank) for rank, entry in ranked], "total": total}
        text = json.dumps(
            {
                "id": cursor,
                "rooms": [GLOBAL_BOARD],
                "event": "leaderboard:initial",
                "data": data,
                "ts": int(time.time() * 1000),
            },
            separators=(",", ":"),
        )
        snapshot = Event(0, cursor, (GLOBAL_BOARD,), "leaderboard:initial", text)
        if (self.cursor(), self._board_generation) == (cursor, generation):
            self._snapshots[top] = snapshot  # nothing happened while reading: still the truth
        return snapshot

    # housekeeping -------------------------------------------------------------------------------
    async def _tick(self) -> None:
        """Once a second: end streams whose token expired; each heartbeat period: ping."""
        next_beat = time.monotonic() + self.heartbeat_seconds
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            # A second early rather than late: the protocol promises "at least every 15 s".
            beat = time.monotonic() + 1.0 >= next_beat
            if beat:
                next_beat = time.monotonic() + self.heartbeat_seconds
            for ticker in self.tickers:
                ticker(time.monotonic())
            for conn in list(self.connections.values()):
                if conn.expires_at is not None and conn.expires_at <= now:
                    conn.close("expired")
                elif beat:
                    conn.push(HEARTBEAT)
                elif conn.sink is not None and conn._queue:
                    conn.flush()  # written once its socket drained below the mark
