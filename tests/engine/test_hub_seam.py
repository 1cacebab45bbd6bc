"""The resume seam when the live feed lags the log (issue 7 item 1).

On the Redis engine the log can be ahead of what the hub has been handed (pub/sub lag, a
backfill, resuming on the other instance during a burst). A connection that caught up from
the log then receives the same events again from the live feed, possibly in several
deliveries. The rule: a connection never emits a seq at or below its last_seq (seq 0, events
that are not in the log, always pass), never skips one of its rooms, and its last_seq never
moves backwards.

`LaggingEngine` is the memory engine with its live feed held back: events are appended to the
log at once but handed to the hub only when the test releases them, in chunks of any size.
"""

from __future__ import annotations

import asyncio
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quart_app.engine.base import Draft, Event, Publication
from quart_app.engine.hub import Connection, Hub
from quart_app.engine.memory import MemoryEngine

ROOMS = ("matches", "presence", "match:m1")


class LaggingEngine(MemoryEngine):
    """The log is written at once; the live feed reaches the hub only on `release`."""

    def __init__(self) -> None:
        super().__init__(event_log_size=100_000)
        self.held: list[Event] = []

    def _deliver(self, events: list[Event]) -> None:
        self.held.extend(events)

    def release(self, count: int) -> None:
        batch, self.held = self.held[:count], self.held[count:]
        if batch:
            super()._deliver(batch)


class Watch:
    """One connection, and everything it emitted, checked as it goes."""

    def __init__(self, conn: Connection, start: int) -> None:
        self.conn = conn
        self.start = start
        self.emitted: list[int] = []

    async def take(self) -> None:
        before = self.conn.last_seq
        batch = await self.conn.next_batch(0)
        assert self.conn.last_seq >= before, "last_seq moved backwards"
        seqs = [event.seq for event in batch if event.seq]
        assert seqs == sorted(set(seqs)), f"repeat or disorder within one batch: {seqs}"
        if seqs and self.emitted:
            assert seqs[0] > self.emitted[-1], f"{seqs[0]} again after {self.emitted[-1]}"
        self.emitted += seqs


async def publish(engine: LaggingEngine, room: str) -> None:
    await engine.publish(Publication(events=(Draft((room,), "announcement", {}),)))


def expected(engine: LaggingEngine, rooms: tuple[str, ...], after: int) -> list[int]:
    return [e.seq for e in engine._log if e.seq > after and set(e.rooms) & set(rooms)]


async def test_lagging_deliveries_in_two_parts_are_not_sent_again() -> None:
    engine = LaggingEngine()
    await engine.start()
    hub = Hub(engine, queue_limit=10_000)
    await hub.start()
    for _ in range(10):
        await publish(engine, "matches")
    # The client resumes from 2 while the hub has been handed nothing yet: the catch-up reads
    # 3..10 from the log, then the live feed brings 1..10 in two deliveries.
    watch = Watch(hub.open(None, ["matches"], None, after_seq=2), 2)
    await watch.take()
    assert watch.emitted == list(range(3, 11))
    engine.release(6)
    await watch.take()
    engine.release(4)
    await watch.take()
    await publish(engine, "matches")
    engine.release(1)
    await watch.take()
    assert watch.emitted == list(range(3, 12))
    await hub.stop()
    await engine.stop()


step = st.one_of(
    st.tuples(st.just("publish"), st.sampled_from(ROOMS)),
    st.tuples(st.just("release"), st.integers(1, 4)),
    st.tuples(st.just("take"), st.integers(0, 2)),
    st.tuples(st.just("open"), st.integers(0, 30)),
)


async def _interleaving(history: list[str], steps: list[tuple[str, object]]) -> None:
    engine = LaggingEngine()
    await engine.start()
    hub = Hub(engine, queue_limit=100_000)
    await hub.start()
    watches: list[Watch] = []
    try:
        for room in history:  # in the log, not yet handed to the hub
            await publish(engine, room)
        for kind, arg in steps:
            if kind == "publish":
                await publish(engine, str(arg))
            elif kind == "release":
                engine.release(int(str(arg)))
            elif kind == "take" and watches:
                await watches[int(str(arg)) % len(watches)].take()
            elif kind == "open" and len(watches) < 3:
                rooms = (ROOMS[len(watches)], "matches")
                after = min(int(str(arg)), engine._seq)
                watches.append(Watch(hub.open(None, rooms, None, after_seq=after), after))
        engine.release(len(engine.held))
        for watch in watches:
            for _ in range(1000):
                if not watch.conn.catching_up and not watch.conn._queue:
                    break
                await watch.take()
            assert watch.emitted == expected(engine, watch.conn.rooms, watch.start)
    finally:
        await hub.stop()
        await engine.stop()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(ROOMS), max_size=20), st.lists(step, max_size=60))
def test_every_interleaving_of_pushes_and_catch_up_pages_is_exactly_once(
    history: list[str], steps: list[tuple[str, object]]
) -> None:
    # Pages of 3 events, so catch-up pages and live deliveries interleave too.
    with mock.patch("quart_app.engine.hub.CATCH_UP_PAGE", 3):
        asyncio.run(_interleaving(history, steps))
