"""The current window (PROTOCOL 1, 2: "sent on subscribe", "a resumed client gets a fresh one")
is the board as it is when it is asked for, also while a re-read of that window is under way;
a connection is then sent a window only when it differs from the one it holds, and always
ends on the board: after a read of its own that a tick did not see, a failed read, or a new
log (memory engine; board reads held, answered late or failed at will, as Redis does)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quart_app.domain.board import BoardEntry, Ranked
from quart_app.domain.ids import GLOBAL_BOARD
from quart_app.domain.publication import Draft, Publication, RankSlot
from quart_app.engine import windows
from quart_app.engine.base import EngineUnavailable
from quart_app.engine.hub import Connection, Hub
from quart_app.engine.memory import MemoryEngine

from .test_hub_budget import Socket, settle

PLAYERS = ("a", "b", "c", "d", "e")
ROOM = "leaderboard:top:3"


class Reads:
    """The board reads of the windows, each of the next ones as the test says: `hold()` (it
    waits before reading, until `release()`), `late()` (it reads at once, its answer waits
    until `release()`: a slow round trip back) or `fail()` (EngineUnavailable)."""

    def __init__(self, engine: MemoryEngine) -> None:
        self.engine = engine
        self.next: list[str] = []
        self.held: list[asyncio.Future[None]] = []

    def hold(self) -> None:
        self.next.append("hold")

    def late(self) -> None:
        self.next.append("late")

    def fail(self) -> None:
        self.next.append("fail")

    def release(self) -> None:
        self.next = [how for how in self.next if how == "fail"]
        for read in self.held:
            if not read.done():
                read.set_result(None)

    async def _wait(self) -> None:
        read = asyncio.get_running_loop().create_future()
        self.held.append(read)
        await read

    async def _read(self, read: Any) -> Any:
        how = self.next.pop(0) if self.next else ""
        if how == "fail":
            raise EngineUnavailable("redis: down (test)")
        if how == "hold":
            await self._wait()
        answer = await read()
        if how == "late":
            await self._wait()
        return answer

    async def board_page(self, offset: int, limit: int) -> tuple[list[Ranked], int]:
        answer: tuple[list[Ranked], int] = await self._read(
            lambda: self.engine.board_page(offset, limit)
        )
        return answer

    async def board_around(self, player_id: str, radius: int) -> list[Ranked]:
        answer: list[Ranked] = await self._read(lambda: self.engine.board_around(player_id, radius))
        return answer


async def rate(engine: MemoryEngine, player_id: str, rating: float, version: int) -> None:
    """A board change as a result publishes it: the row, and a `leaderboard:update` whose
    ranks the engine fills in."""
    row = BoardEntry(player_id, player_id, rating, 0, 0, 0, 0, version)
    change = {"player_id": player_id, "rating": rating, "rank": None, "previous_rank": None}
    slots = (
        RankSlot(("changes", 0, "rank"), player_id, "after"),
        RankSlot(("changes", 0, "previous_rank"), player_id, "before"),
    )
    update = Draft(("leaderboard:global",), "leaderboard:update", {"changes": [change]}, slots)
    await engine.publish(Publication(board=(row,), events=(update,)))


async def top(engine: MemoryEngine) -> list[dict[str, Any]]:
    ranked, _ = await engine.board_page(0, 3)
    return [entry.as_entry(rank) for rank, entry in ranked]


def entries(text: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(text)["data"]["entries"]
    return found


def ids(text: str) -> list[str]:
    return [entry["player_id"] for entry in entries(text)]


async def until(condition: Any, what: str) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0)
    assert condition(), what


async def delivered(hub: Hub, rooms: tuple[str, ...] = (ROOM,)) -> None:
    """Until the windows of `rooms` are re-read and what they pushed is written (a flush may
    be paced after a slow one: see Hub._schedule_flush)."""
    await hub.windows.settled(rooms)
    await settle()
    await until(lambda: not hub._to_flush, "every push written")


async def board_read_through(hub: Hub) -> tuple[MemoryEngine, Reads]:
    """The board of five, its windows read through `Reads`."""
    engine = await board_of_five(hub)
    reads = Reads(engine)
    hub.windows.read_with(reads)
    return engine, reads


async def board_of_five(hub: Hub) -> MemoryEngine:
    engine = hub.engine
    assert isinstance(engine, MemoryEngine)
    await seed_five(engine)
    return engine


async def seed_five(engine: MemoryEngine) -> None:
    for n, player in enumerate(PLAYERS):
        await rate(engine, player, 1300.0 - 10 * n, 1)


@contextlib.asynccontextmanager
async def own_hub(
    before_it: Callable[[MemoryEngine], Awaitable[None]] | None = None,
) -> AsyncIterator[Hub]:
    """A hub on a memory engine of its own (`before_it`: what the engine holds before the
    hub listens), for tests that cannot take the `hub` fixture's loop or engine."""
    engine = MemoryEngine()
    await engine.start()
    if before_it is not None:
        await before_it(engine)
    hub = Hub(engine, queue_limit=1000, queue_bytes=20_000)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
        await engine.stop()


async def test_a_window_asked_for_during_its_re_read_is_the_board_as_it_is_now(hub: Hub) -> None:
    engine, reads = await board_read_through(hub)
    await hub.windows.current([ROOM])
    await hub.windows.settled([ROOM])
    reads.hold()
    await rate(engine, "e", 1400.0, 2)  # touches the window: a re-read starts, and is held
    await until(lambda: len(reads.held) == 1, "the re-read under way")
    asked = asyncio.create_task(hub.windows.current([ROOM]))
    await until(asked.done, "the answer, without waiting for the held re-read")
    reads.release()
    (window,) = await asked
    assert entries(window.text) == await top(engine)
    assert ids(window.text) == ["e", "a", "b"]


def window_ids(sock: Socket) -> list[list[str]]:
    return [ids(event.text) for event in sock.written if event.name == "leaderboard:window"]


async def open_stream(hub: Hub, rooms: tuple[str, ...] = (ROOM,)) -> tuple[Connection, Socket]:
    """A connection as a stream opens one: registered, given its current windows (which the
    stream writes first), then live; closed when they cannot be read (the stream is a 503)."""
    conn, sock = hub.open("viewer", rooms, None), Socket()
    try:
        sock.written = await hub.windows.current(rooms, conn)
    except EngineUnavailable:
        conn.close("gone")
        raise
    conn.attach(sock)
    return conn, sock


async def join_later(hub: Hub, rooms: tuple[str, ...] = (ROOM,)) -> tuple[Connection, Socket]:
    """A live connection subscribing to `rooms` (WebSocket subscribe, POST subscribe). When
    the windows cannot be read it stays subscribed (the client is told 503): the next change
    must still reach it."""
    conn, sock = hub.open("viewer", ["matches"], None), Socket()
    conn.attach(sock)
    with contextlib.suppress(EngineUnavailable):
        await hub.windows.push_current(conn, hub.join(conn, rooms))
    return conn, sock


def new_log(engine: MemoryEngine) -> None:
    """The log starts again under a new epoch, as the Redis engine's does after Redis lost
    its data: the hub tells every stream stream:reset at its next event."""
    engine._epoch, engine._seq = secrets.token_hex(4), 0
    engine._log.clear()


async def subscriber(hub: Hub) -> tuple[Connection, Socket, list[str]]:
    conn, sock = await open_stream(hub)
    return conn, sock, ids(sock.written[0].text)


async def test_one_who_subscribes_during_a_re_read_is_not_sent_the_same_window_again(
    hub: Hub,
) -> None:
    engine, reads = await board_read_through(hub)
    _, watcher, _ = await subscriber(hub)
    await hub.windows.settled([ROOM])
    reads.hold()
    await rate(engine, "e", 1400.0, 2)
    await until(lambda: len(reads.held) == 1, "the re-read under way")
    _, newcomer, given = await subscriber(hub)
    assert given == ["e", "a", "b"]
    reads.release()
    await delivered(hub)
    assert window_ids(watcher) == [["a", "b", "c"], ["e", "a", "b"]]  # told of the change
    assert window_ids(newcomer) == [["e", "a", "b"]]  # given it: not sent it again


async def test_one_who_subscribes_while_a_re_read_is_due_is_not_sent_the_same_window_again(
    hub: Hub,
) -> None:
    engine = await board_of_five(hub)
    _, watcher, _ = await subscriber(hub)
    await hub.windows.settled([ROOM])
    await rate(engine, "e", 1400.0, 2)  # a re-read is due (at once, or after the last + 0.1 s)
    _, newcomer, given = await subscriber(hub)
    assert given == ["e", "a", "b"]
    await delivered(hub)
    assert window_ids(watcher) == [["a", "b", "c"], ["e", "a", "b"]]
    assert window_ids(newcomer) == [["e", "a", "b"]]


async def test_a_read_of_its_own_that_a_later_tick_did_not_change_is_corrected(hub: Hub) -> None:
    """Its own read [e, a, b] answers late; meanwhile the board went back to [a, b, c] and a
    tick found the window unchanged (nothing sent): the newcomer must still end on the board."""
    engine, reads = await board_read_through(hub)
    await open_stream(hub)
    await hub.windows.settled([ROOM])
    await rate(engine, "e", 1400.0, 2)
    reads.late()
    newcomer = asyncio.create_task(open_stream(hub))
    await until(lambda: len(reads.held) == 1, "the newcomer's read answering late")
    await rate(engine, "e", 1260.0, 3)  # back: [a, b, c]
    await hub.windows.settled([ROOM])
    reads.release()
    conn, sock = await newcomer
    await delivered(hub)
    assert window_ids(sock) == [["e", "a", "b"], ["a", "b", "c"]]
    conn.close("gone")
    await rate(engine, "a", 1500.0, 4)
    await hub.windows.settled([ROOM])
    assert conn not in hub.windows._windows[ROOM].fresh  # nothing kept for a closed one


async def test_a_subscriber_whose_read_spans_a_new_log_gets_the_new_logs_window(
    hub: Hub,
) -> None:
    engine, reads = await board_read_through(hub)
    _, watcher = await open_stream(hub)
    await hub.windows.settled([ROOM])
    await rate(engine, "c", 1285.0, 2)  # a re-read due
    reads.late()
    newcomer = asyncio.create_task(open_stream(hub))  # reads in the old log, answers late
    await until(lambda: len(reads.held) == 1, "the newcomer's read answering late")
    await hub.windows.settled([ROOM])
    new_log(engine)
    await rate(engine, "e", 1400.0, 3)  # the new log's first event: stream:reset to all
    await hub.windows.settled([ROOM])
    reads.release()
    _, sock = await newcomer
    await rate(engine, "d", 1500.0, 2)
    await delivered(hub)
    assert window_ids(watcher)[-1] == ["d", "e", "a"]
    assert window_ids(sock)[-1] == ["d", "e", "a"]


async def test_a_subscribe_whose_read_failed_still_gets_the_next_window(hub: Hub) -> None:
    engine, reads = await board_read_through(hub)
    await open_stream(hub)
    await hub.windows.settled([ROOM])
    await rate(engine, "e", 1400.0, 2)  # a re-read due: the subscribe reads the window itself
    reads.fail()
    _, sock = await join_later(hub)
    assert window_ids(sock) == []
    await delivered(hub)
    assert window_ids(sock) == [["e", "a", "b"]]  # the window it missed, unasked


async def test_a_window_changing_while_another_of_the_same_subscribe_is_read_is_not_undone(
    hub: Hub,
) -> None:
    """top:3 is cached, top:5 is read (held); top:3 changes meanwhile: the subscriber ends
    on the new top:3, not on the cached one delivered after it."""
    engine, reads = await board_read_through(hub)
    small, big = ROOM, "leaderboard:top:5"
    await open_stream(hub, (small, big))
    await hub.windows.settled([small, big])
    await rate(engine, "e", 1275.0, 2)  # ranks 4 and 5 swap: only top:5 is due a re-read
    reads.hold()
    subscribing = asyncio.create_task(join_later(hub, (small, big)))
    await until(lambda: len(reads.held) == 1, "top:5 read under way (top:3 was cached)")
    await rate(engine, "e", 1400.0, 3)  # top:3 changes
    await hub.windows.settled([small])
    reads.release()
    _, sock = await subscribing
    await delivered(hub, (small, big))
    got = [ids(e.text) for e in sock.written if e.name == "leaderboard:window" and small in e.rooms]
    assert got[-1] == ["e", "a", "b"], got


def after_last_reset(sock: Socket) -> list[list[str]]:
    """The windows written after the connection's last stream:reset (all, if none)."""
    return [ids(event.text) for event in runs_between_resets(sock)[-1]]


@pytest.mark.parametrize("ticked", [False, True], ids=["read-itself", "cached"])
async def test_a_stream_opening_as_a_new_log_begins_gets_its_window_after_the_reset(
    hub: Hub, ticked: bool
) -> None:
    """Redis lost its data while a stream opened (between its registration and its windows):
    its stream:reset is queued behind what it is given first, so the window comes after it."""
    engine = await board_of_five(hub)
    await open_stream(hub)
    await hub.windows.settled([ROOM])
    rooms = (GLOBAL_BOARD, ROOM)
    conn = hub.open("viewer", rooms, None)  # as streams.open_connection, then the snapshot:
    snapshot = await hub.snapshot(100)
    new_log(engine)
    await rate(engine, "e", 1200.0, 2)  # the new log's first event; the window is unchanged
    if ticked:
        await hub.windows.settled([ROOM])
    sock = Socket()
    sock.written = [snapshot, *await hub.windows.current(rooms, conn)]
    conn.attach(sock)
    await delivered(hub)
    assert after_last_reset(sock) == [["a", "b", "c"]], [e.name for e in sock.written]


async def test_a_new_log_before_any_event_seen_here_still_resends_the_windows() -> None:
    async with own_hub(before_it=seed_five) as hub:
        engine = hub.engine
        assert isinstance(engine, MemoryEngine)
        _, sock = await open_stream(hub)
        new_log(engine)
        await rate(engine, "e", 1200.0, 2)  # stream:reset to every stream; window unchanged
        await delivered(hub)
        assert after_last_reset(sock) == [["a", "b", "c"]], [e.name for e in sock.written]


async def test_a_catch_up_reset_sends_the_window_once(hub: Hub) -> None:
    """A resumed connection whose cursor expired while catching up is told stream:reset and
    given its windows again (streams.reset_events): a tick publishing during that read does
    not also push it the same window."""
    engine, reads = await board_read_through(hub)
    conn = hub.open("viewer", (ROOM,), None, after_seq=hub.head_seq)
    written = await hub.windows.current(conn.rooms, conn)
    await hub.windows.settled([ROOM])
    await rate(engine, "c", 1285.0, 2)  # a re-read due
    reads.late()
    reset = hub.stream_event("stream:reset", {"reason": "expired"}, conn.last_seq)
    hub.windows.forget(conn)  # as reset_events does
    again = asyncio.create_task(hub.windows.current(conn.rooms, conn))
    await until(lambda: len(reads.held) == 1, "its read answering late")
    await rate(engine, "e", 1400.0, 3)  # a tick reads and publishes meanwhile
    await hub.windows.settled([ROOM])
    reads.release()
    sock = Socket()
    sock.written = [*written, reset, *await again]
    conn._catching_up = False
    conn.attach(sock)
    await delivered(hub)
    assert after_last_reset(sock) == [["e", "a", "b"]]


async def test_a_conflated_connection_holding_a_newer_read_is_not_sent_an_older_one(
    hub: Hub,
) -> None:
    engine, reads = await board_read_through(hub)
    await open_stream(hub)
    await hub.windows.settled([ROOM])
    reads.hold()
    await rate(engine, "e", 1400.0, 2)
    await until(lambda: len(reads.held) == 1, "the tick's re-read held")
    conn, sock = await open_stream(hub)  # a read of its own: [e, a, b]
    hub.windows.resend_soon(conn)  # what Connection._relieve does after dropping its windows
    await settle()
    reads.release()
    await delivered(hub)
    got = [e for e in sock.written if e.name == "leaderboard:window"]
    assert [position(e.cursor) for e in got] == sorted(position(e.cursor) for e in got)
    assert ids(got[-1].text) == ["e", "a", "b"]


Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("rate"), st.integers(0, len(PLAYERS) * 100)),
        st.tuples(st.just("ask"), st.just(0)),
        st.tuples(st.just("subscribe"), st.just(0)),
        st.tuples(st.just("join"), st.just(0)),
        st.tuples(st.just("turns"), st.integers(1, 5)),
        st.tuples(st.just("hold"), st.just(0)),
        st.tuples(st.just("late"), st.just(0)),
        st.tuples(st.just("fail"), st.just(0)),
        st.tuples(st.just("release"), st.just(0)),
        st.tuples(st.just("new_log"), st.just(0)),
    ),
    max_size=40,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=steps)
def test_every_window_is_the_board_at_some_moment_and_none_is_sent_twice(
    steps: list[Step], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Board changes (also in a new log), askers, streams opening, live connections joining,
    reads held, answered late or failed, in any interleaving: each answer equals the board as
    it was at some moment between the asking and the answer; each connection's windows (since
    its last stream:reset) never go back in the log and never repeat the one before; every
    connection ends on the board. (Without coalescing, a re-read follows each change at the
    next turn of the loop: the interleaving is the steps', not the clock's.)"""
    # Each example on a loop of its own: nothing left by the one before shifts the turns.
    asyncio.run(interleaved(steps, monkeypatch))


async def interleaved(steps: list[Step], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windows, "COALESCE_SECONDS", 0.0)
    async with own_hub() as hub:
        engine, reads = await board_read_through(hub)
        boards = [await top(engine)]  # the board after each change
        asked: list[tuple[int, asyncio.Task[Any]]] = []
        subscribed: list[asyncio.Task[tuple[Connection, Socket]]] = []
        version = 2
        for action, n in steps:
            if action == "rate":
                await rate(engine, PLAYERS[n % len(PLAYERS)], 1000.0 + n, version)
                version += 1
                boards.append(await top(engine))
            elif action == "ask":
                asked.append((len(boards) - 1, asyncio.create_task(hub.windows.current([ROOM]))))
            elif action in ("subscribe", "join"):
                opening = open_stream if action == "subscribe" else join_later
                subscribed.append(asyncio.create_task(opening(hub)))
            elif action == "turns":
                for _ in range(n):
                    await asyncio.sleep(0)
            elif action in ("hold", "late", "fail"):
                getattr(reads, action)()
            elif action == "new_log":
                new_log(engine)
            else:
                reads.release()
        reads.release()
        for since, task in asked:
            with contextlib.suppress(EngineUnavailable):  # (a failed read: a 503)
                # (None when the read was of a log that ended meanwhile)
                for window in await asyncio.wait_for(task, 5):
                    assert entries(window.text) in boards[since:], (steps, since, boards)
        opened = await asyncio.gather(*subscribed, return_exceptions=True)
        streams = [stream for stream in opened if not isinstance(stream, EngineUnavailable)]
        await rate(engine, "a", 2000.0, version)  # a last change every connection must see
        boards.append(await top(engine))
        await delivered(hub)
        for stream in streams:
            assert not isinstance(stream, BaseException), stream
            for got in runs_between_resets(stream[1]):
                positions = [position(e.cursor) for e in got]
                assert positions == sorted(positions), (steps, positions)
                seen = [entries(e.text) for e in got]
                assert all(a != b for a, b in zip(seen, seen[1:], strict=False)), (steps, seen)
            last = runs_between_resets(stream[1])[-1][-1:]
            assert [entries(e.text) for e in last] == [boards[-1]], (steps, stream[1].written)


def runs_between_resets(sock: Socket) -> list[list[Any]]:
    """The windows a connection was sent, split at each stream:reset (the client drops its
    state there: a window may repeat one sent before it)."""
    runs: list[list[Any]] = [[]]
    for event in sock.written:
        if event.name == "stream:reset":
            runs.append([])
        elif event.name == "leaderboard:window":
            runs[-1].append(event)
    return runs


def position(cursor: str) -> int:
    return int(cursor.rpartition(".")[2])
