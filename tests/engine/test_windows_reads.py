"""The current window (PROTOCOL 1, 2: "sent on subscribe", "a resumed client gets a fresh one")
is the board as it is when it is asked for, also while a re-read of that window is under way;
and a connection is then sent a window only when it differs from the one it holds (memory
engine; board reads held at will, as a slow Redis round trip holds them)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quart_app.domain.board import BoardEntry, Ranked
from quart_app.domain.publication import Draft, Publication, RankSlot
from quart_app.engine import windows
from quart_app.engine.hub import Connection, Hub
from quart_app.engine.memory import MemoryEngine

from .test_hub_budget import Socket, settle

PLAYERS = ("a", "b", "c", "d", "e")
ROOM = "leaderboard:top:3"


class HeldReads:
    """The board reads of the windows: the next `hold()`-many are held until `release()`."""

    def __init__(self, engine: MemoryEngine) -> None:
        self.engine = engine
        self.to_hold = 0
        self.held: list[asyncio.Future[None]] = []

    def hold(self) -> None:
        self.to_hold += 1

    def release(self) -> None:
        self.to_hold = 0
        for read in self.held:
            if not read.done():
                read.set_result(None)

    async def _held(self) -> None:
        if self.to_hold:
            self.to_hold -= 1
            read = asyncio.get_running_loop().create_future()
            self.held.append(read)
            await read

    async def board_page(self, offset: int, limit: int) -> tuple[list[Ranked], int]:
        await self._held()
        return await self.engine.board_page(offset, limit)

    async def board_around(self, player_id: str, radius: int) -> list[Ranked]:
        await self._held()
        return await self.engine.board_around(player_id, radius)


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


async def board_of_five(hub: Hub) -> MemoryEngine:
    engine = hub.engine
    assert isinstance(engine, MemoryEngine)
    for n, player in enumerate(PLAYERS):
        await rate(engine, player, 1300.0 - 10 * n, 1)
    return engine


async def test_a_window_asked_for_during_its_re_read_is_the_board_as_it_is_now(hub: Hub) -> None:
    engine = await board_of_five(hub)
    reads = HeldReads(engine)
    hub.windows.read_with(reads)
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


async def open_stream(hub: Hub) -> tuple[Connection, Socket]:
    """A connection as a stream opens one: registered, given its current window (which the
    stream writes first), then live."""
    conn, sock = hub.open("viewer", [ROOM], None), Socket()
    sock.written = await hub.windows.current([ROOM], conn)
    conn.attach(sock)
    return conn, sock


async def subscriber(hub: Hub) -> tuple[Connection, Socket, list[str]]:
    conn, sock = await open_stream(hub)
    return conn, sock, ids(sock.written[0].text)


async def test_one_who_subscribes_during_a_re_read_is_not_sent_the_same_window_again(
    hub: Hub,
) -> None:
    engine = await board_of_five(hub)
    reads = HeldReads(engine)
    hub.windows.read_with(reads)
    _, watcher, _ = await subscriber(hub)
    await hub.windows.settled([ROOM])
    reads.hold()
    await rate(engine, "e", 1400.0, 2)
    await until(lambda: len(reads.held) == 1, "the re-read under way")
    _, newcomer, given = await subscriber(hub)
    assert given == ["e", "a", "b"]
    reads.release()
    await hub.windows.settled([ROOM])
    await settle()
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
    await hub.windows.settled([ROOM])
    await settle()
    assert window_ids(watcher) == [["a", "b", "c"], ["e", "a", "b"]]
    assert window_ids(newcomer) == [["e", "a", "b"]]


Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("rate"), st.integers(0, len(PLAYERS) * 100)),
        st.tuples(st.just("ask"), st.just(0)),
        st.tuples(st.just("subscribe"), st.just(0)),
        st.tuples(st.just("turns"), st.integers(1, 5)),
        st.tuples(st.just("hold"), st.just(0)),
        st.tuples(st.just("release"), st.just(0)),
    ),
    max_size=30,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=steps)
async def test_every_window_is_the_board_at_some_moment_and_none_is_sent_twice(
    steps: list[Step], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Board changes, askers, subscribers, re-reads held and released, in any interleaving:
    each answer equals the board as it was at some moment between the asking and the answer;
    each subscriber's windows never go back in the log, never repeat the one before, and end
    on the board. (Without coalescing, a re-read follows each change at the next turn of the
    loop: the interleaving is the steps', not the clock's.)"""
    monkeypatch.setattr(windows, "COALESCE_SECONDS", 0.0)
    engine = MemoryEngine()
    await engine.start()
    hub = Hub(engine, queue_limit=1000, queue_bytes=20_000)
    await hub.start()
    try:
        await board_of_five(hub)
        reads = HeldReads(engine)
        hub.windows.read_with(reads)
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
            elif action == "subscribe":
                subscribed.append(asyncio.create_task(open_stream(hub)))
            elif action == "turns":
                for _ in range(n):
                    await asyncio.sleep(0)
            elif action == "hold":
                reads.hold()
            else:
                reads.release()
        reads.release()
        for since, task in asked:
            (window,) = await asyncio.wait_for(task, 5)
            assert entries(window.text) in boards[since:], (steps, since, boards)
        streams = [await asyncio.wait_for(task, 5) for task in subscribed]
        await hub.windows.settled([ROOM])
        await settle()
        for _, sock in streams:
            got = [e for e in sock.written if e.name == "leaderboard:window"]
            positions = [hub.resume_position(e.cursor) for e in got]
            assert positions == sorted(positions), (steps, positions)
            seen = [entries(e.text) for e in got]
            assert all(a != b for a, b in zip(seen, seen[1:], strict=False)), (steps, seen)
            assert seen[-1] == boards[-1], (steps, seen, boards)
    finally:
        await hub.stop()
        await engine.stop()
