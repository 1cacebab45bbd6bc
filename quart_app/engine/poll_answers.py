"""Long-poll answers, computed once per crowd.

A long-poll is stateless: each request carries a cursor and rooms, and is answered with the
events of those rooms after the cursor (at most MAX_EVENTS) or, when there are none yet, with
the first ones to arrive. Thousands of pollers ask the same question at once (they all hold
the cursor of the last answer), so the answers are shared:

- Pollers behind the head read the log. The answer for one (epoch, position, rooms) is read
  and encoded once, also when a crowd asks at the same moment, and kept in a small LRU while
  it is still what a read would give: until an event of its rooms comes after what it read
  (unless its page was full). An answer kept longer stays true but falls short, and each of
  its pollers pays a round trip more for the events it left out. Events of other rooms (a
  publisher's own, presence) leave it whole: the last event of each room of a kept or
  pending read is noted as events arrive.
- Pollers at the head wait in a group per rooms-key, released once by the fan-out that carries
  events of those rooms. The group collects those events; its answer body is encoded once per
  position and shared by every waiter there. No connection, queue or task per poll: a wake-up
  is one future per waiting request.
- Fairness: a released group wakes its waiters WAKE_SLICE at a time, one slice per turn of the
  event loop. Woken all at once, a thousand pollers' answers ran in one turn, and every other
  request (a POST) waited behind all of them at each of its own steps (issue 9: a publish
  answered after 1.5 s under 1,000 pollers).
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .base import Event
from .poll_cursor import answer_cursor

if TYPE_CHECKING:
    from .hub import Hub

# PROTOCOL 3.2: an answer holds at most this many events; the client polls again for more.
MAX_EVENTS = 500
# Answers read from the log, remembered (each up to MAX_EVENTS envelopes).
READ_CACHE_ENTRIES = 128
# Waiters woken per turn of the event loop (see the module's docstring): small enough that a
# turn stays short next to a write's own steps, large enough that a crowd is answered in a
# few dozen turns.
WAKE_SLICE = 32

RoomsKey = tuple[str, ...]
ReadKey = tuple[str, int, RoomsKey]  # (epoch, position, rooms)
LogRead = tuple[bytes | None, int, bool]  # (body, position reached, the page read was full)

# Why a group was released without events of its rooms.
SHUTDOWN = "shutdown"
RESET = "reset"


def rooms_key(rooms: Iterable[str]) -> RoomsKey:
    """One key for one set of rooms, whatever order the client named them in."""
    return tuple(sorted(set(rooms)))


def answer_body(events: list[Event], cursor: str) -> bytes:
    # The envelopes are already JSON: spliced in, not decoded and encoded again.
    return ('{"events":[' + ",".join(e.text for e in events) + f'],"cursor":"{cursor}"}}').encode()


class WaitGroup:
    """Pollers of one rooms-key waiting at the head for the next events of those rooms."""

    __slots__ = ("key", "rooms", "events", "reason", "released", "fired_at", "waiters", "_bodies")

    def __init__(self, key: RoomsKey) -> None:
        self.key = key
        self.rooms = frozenset(key)
        self.events: list[Event] = []
        # Once released: why (None: events arrived; SHUTDOWN or RESET).
        self.released = False
        self.reason: str | None = None
        # The head when the group was released: every event of its rooms up to there is in
        # `events`.
        self.fired_at = 0
        # Pollers waiting on it, in arrival order (woken in that order): the last to leave
        # (its poll timed out, or the client went) unregisters a group that was never
        # released, so quiet rooms leave nothing behind.
        self.waiters: dict[asyncio.Future[None], None] = {}
        self._bodies: dict[int, bytes | None] = {}


class PollAnswers:
    """The long-poll side of one hub (see the module's docstring)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._groups: dict[RoomsKey, WaitGroup] = {}
        self._by_room: dict[str, set[WaitGroup]] = {}
        # (epoch, position, rooms) -> (body, position reached, whether the page read was full)
        self._reads: OrderedDict[ReadKey, LogRead] = OrderedDict()
        self._reading: dict[ReadKey, asyncio.Task[LogRead]] = {}
        # The rooms of kept and pending reads (how many hold each), and for those rooms the
        # seq of their last event: bounded by the reads, not by every room there is.
        self._tracked: Counter[str] = Counter()
        self._room_seq: dict[str, int] = {}
        # Bumped when both are cleared (a new epoch): reads begun before untrack nothing.
        self._tracking = 0
        self._last_seq = 0
        self._epoch: str | None = None
        # Answer bodies built (each shared by every poller that got it): the test of sharing.
        self.encodings = 0
        hub.engine.listen(self._on_events)

    @property
    def waiting_groups(self) -> int:
        return len(self._groups)

    @property
    def waiting_pollers(self) -> int:
        """Pollers waiting in a group not released yet."""
        return sum(len(group.waiters) for group in self._groups.values())

    # pollers at the head ------------------------------------------------------------------------
    def join(self, key: RoomsKey) -> tuple[WaitGroup, asyncio.Future[None]]:
        """Wait with the other pollers of `key`: the group, and this poller's wake-up (done
        once the group was released and this poller's slice came)."""
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = WaitGroup(key)
            for room in key:
                self._by_room.setdefault(room, set()).add(group)
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        group.waiters[wake] = None
        return group, wake

    def leave(self, group: WaitGroup, wake: asyncio.Future[None]) -> None:
        """A poller stopped waiting on `group` (answered, timed out, or gone)."""
        group.waiters.pop(wake, None)
        if not group.waiters and not group.released:
            self._unregister(group)

    def body_for(self, group: WaitGroup, position: int) -> bytes | None:
        """The answer of a released group for a poller at `position`, or None when none of
        its events are after that position (the poller then waits again, from fired_at)."""
        if position in group._bodies:
            return group._bodies[position]
        fresh = [e for e in group.events if e.seq > position or e.seq == 0]
        body: bytes | None = None
        if fresh:
            cut = len(fresh) > MAX_EVENTS
            fresh = fresh[:MAX_EVENTS]
            # Every event of its rooms up to the release is in the group: accounted through
            # fired_at (or only through the last one sent, for a cut page).
            seq = answer_cursor(fresh[-1].seq, max(position, group.fired_at), cut=cut)
            body = self._encode(fresh, self._hub.cursor(seq))
        group._bodies[position] = body
        return body

    def _on_events(self, events: list[Event]) -> None:
        """Engine listener, after the hub's fan-out: release the groups these events are for."""
        hub = self._hub
        if self._epoch != hub.epoch:  # the log restarted: every waiting position is gone
            if self._epoch is not None:
                self.release_all(RESET)
            self._epoch = hub.epoch
            self._last_seq = 0
            self._reads.clear()
            self._tracked.clear()
            self._room_seq.clear()
            self._tracking += 1
        if self._tracked:
            tracked, room_seq = self._tracked, self._room_seq
            for event in events:
                if event.seq:
                    for room in event.rooms:
                        if room in tracked and event.seq > room_seq.get(room, 0):
                            room_seq[room] = event.seq
        if not self._groups:
            self._last_seq = max(self._last_seq, hub.head_seq)
            return
        by_room, touched = self._by_room, set()
        for event in events:
            if event.seq and event.seq <= self._last_seq:
                continue  # (the engine promises no repeats; the hub checks too)
            if event.seq:
                self._last_seq = event.seq
            for room in event.rooms:
                for group in by_room.get(room, ()):
                    if group not in touched:
                        touched.add(group)
                        group.events.append(event)
                    elif group.events[-1] is not event:
                        group.events.append(event)
        for group in touched:
            self._release(group, None)

    def _unregister(self, group: WaitGroup) -> None:
        if self._groups.get(group.key) is group:
            del self._groups[group.key]
            for room in group.key:
                members = self._by_room.get(room)
                if members is not None:
                    members.discard(group)
                    if not members:
                        del self._by_room[room]

    def _release(self, group: WaitGroup, reason: str | None) -> None:
        self._unregister(group)
        if group.released:
            return
        group.fired_at = self._hub.head_seq
        group.released, group.reason = True, reason
        self._wake(list(group.waiters), 0)

    def _wake(self, waiters: list[asyncio.Future[None]], start: int) -> None:
        """Wake a slice of waiters now, the rest at the next turns of the loop (fairness)."""
        end = start + WAKE_SLICE
        for wake in waiters[start:end]:
            if not wake.done():  # (a poller that left cancelled its own)
                wake.set_result(None)
        if end < len(waiters):
            asyncio.get_running_loop().call_soon(self._wake, waiters, end)

    def release_all(self, reason: str = SHUTDOWN) -> None:
        """Answer every waiting poller now (shutdown, draining: PROTOCOL 3.7; a new log)."""
        for group in list(self._groups.values()):
            self._release(group, reason)

    # pollers behind the head --------------------------------------------------------------------
    async def read(self, epoch: str, position: int, key: RoomsKey) -> tuple[bytes | None, int]:
        """The answer for pollers at `position` from the log: (its body, the position it
        reaches), or (None, the position read up to) when the log holds no events of these
        rooms after `position`. LogGap as the engine raises it."""
        cache_key = (epoch, position, key)
        cached = self._reads.get(cache_key)
        if cached is not None and self._whole(cached, key):
            self._reads.move_to_end(cache_key)
            return cached[0], cached[1]
        reading = self._reading.get(cache_key)
        if reading is None:
            # One read per question, in its own task: a poller that leaves (its request
            # cancelled) does not cancel the answer the others wait for.
            reading = asyncio.get_running_loop().create_task(
                self._read_and_keep(cache_key, position, key)
            )
            self._reading[cache_key] = reading
            reading.add_done_callback(lambda _: self._reading.pop(cache_key, None))
        answer = await asyncio.shield(reading)
        return answer[0], answer[1]

    async def _read_and_keep(self, cache_key: ReadKey, position: int, key: RoomsKey) -> LogRead:
        tracking = self._tracking
        self._track(key)  # from before the read: an event of these rooms during it counts
        try:
            answer = await self._read(position, frozenset(key))
            if (
                answer[0] is not None
                and cache_key[0] == self._hub.engine.epoch
                and tracking == self._tracking
            ):
                # Kept in the same step as the read's end (tracked before its own tracking
                # ends below): no event of its rooms can go unnoted in between.
                if cache_key not in self._reads:
                    self._track(key)
                self._reads[cache_key] = answer
                if len(self._reads) > READ_CACHE_ENTRIES:
                    evicted, _ = self._reads.popitem(last=False)
                    self._untrack(evicted[2])
            return answer
        finally:
            if tracking == self._tracking:
                self._untrack(key)

    def _whole(self, read: LogRead, key: RoomsKey) -> bool:
        """Whether a kept read is still what reading again would give."""
        _, reached, full = read
        room_seq = self._room_seq
        return full or all(room_seq.get(room, 0) <= reached for room in key)

    def _track(self, key: RoomsKey) -> None:
        for room in key:
            self._tracked[room] += 1

    def _untrack(self, key: RoomsKey) -> None:
        tracked = self._tracked
        for room in key:
            count = tracked.get(room, 0) - 1
            if count > 0:
                tracked[room] = count
            else:
                tracked.pop(room, None)
                self._room_seq.pop(room, None)

    async def _read(self, position: int, rooms: frozenset[str]) -> LogRead:
        engine = self._hub.engine
        while True:
            page = await engine.read_after(position, MAX_EVENTS)
            if not page:
                return None, position, False
            position = page[-1].seq
            full = len(page) == MAX_EVENTS
            found = [e for e in page if not rooms.isdisjoint(e.rooms)]
            if found:
                # Read to the page's end: the cursor passes over its events of other rooms.
                # (A page holds at most MAX_EVENTS: `found` is never cut.)
                seq = answer_cursor(found[-1].seq, position)
                return self._encode(found, self._hub.cursor(seq)), position, full
            if not full:
                return None, position, False

    def _encode(self, events: list[Event], cursor: str) -> bytes:
        self.encodings += 1
        return answer_body(events, cursor)
