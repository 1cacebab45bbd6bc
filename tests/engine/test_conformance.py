"""One behaviour, two engines: every test here runs against the memory and the Redis engine."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quart_app.engine import memory as memory_module
from quart_app.engine import redis as redis_module
from quart_app.engine.base import (
    BoardEntry,
    Draft,
    Engine,
    LogGap,
    NoSuchInstance,
    Publication,
    build_event,
    presence_draft,
)
from quart_app.engine.cursor import decode, encode
from quart_app.engine.memory import MemoryEngine
from quart_app.engine.redis import RedisEngine

from .conftest import Collector, EngineFactory, draft, ready_board, rows


def row(player_id: str, rating: float, version: int = 1, **extra: int) -> BoardEntry:
    counts = {"wins": 0, "losses": 0, "draws": 0, "games": 0, **extra}
    return BoardEntry(player_id, player_id.upper(), rating, version=version, **counts)


async def board_ids(engine: Engine) -> list[str]:
    entries, _total = await engine.board_page(0, 1000)
    return [entry.player_id for _rank, entry in entries]


async def put(engine: Engine, *rows: BoardEntry) -> None:
    await engine.publish(Publication(board=rows))


# the event log --------------------------------------------------------------------------------
async def test_publish_returns_consecutive_events_with_envelopes(engine: Engine) -> None:
    start = await engine.head()
    drafts = (
        Draft(("matches", "match:m1"), "match:created", {"match_id": "m1", "n": 1}),
        Draft(
            ("leaderboard:global",),
            "leaderboard:update",
            {"match_id": "m1", "changes": [], "note": 'é "quoted" \n\u2028 </script>'},
        ),
        Draft((), "announcement", {}),
    )
    publication = Publication(key="p-1", events=drafts, ts=1795693643053)
    events = await engine.publish(publication)

    assert [event.seq for event in events] == [start + 1, start + 2, start + 3]
    assert await engine.head() == start + 3
    for event, source in zip(events, drafts, strict=True):
        assert event.cursor == encode(engine.epoch, event.seq)
        assert decode(event.cursor) == (engine.epoch, event.seq)
        assert event.name == source.event
        assert event.rooms == source.rooms
        # byte-identical to what base.build_event makes of the same draft
        assert event.text == build_event(engine.epoch, event.seq, source, publication.ts).text
        envelope = json.loads(event.text)
        assert list(envelope) == ["id", "rooms", "event", "data", "ts"]
        assert envelope == {
            "id": event.cursor,
            "rooms": list(source.rooms),
            "event": source.event,
            "data": source.data,
            "ts": 1795693643053,
        }
        assert "\n" not in event.text
        assert event.sse == (
            f"id: {event.cursor}\nevent: {event.name}\ndata: {event.text}\n\n".encode()
        )
    # the log holds the very same texts
    assert [e.text for e in await engine.read_after(start, 10)] == [e.text for e in events]


async def test_same_key_twice_is_a_no_op(engine: Engine) -> None:
    first = Publication(key="match:m1:result", board=(row("a", 1300.0, 2),), events=(draft(1),))
    assert len(await engine.publish(first)) == 1
    head = await engine.head()
    board = await engine.board_page(0, 10)

    replay = Publication(
        key="match:m1:result",
        board=(row("a", 999.0, 7), row("b", 1.0)),
        events=(draft(2), draft(3)),
    )
    assert await engine.publish(replay) == []
    assert await engine.publish(first) == []
    assert await engine.head() == head
    assert await engine.board_page(0, 10) == board
    # without a key, nothing is deduplicated
    assert len(await engine.publish(Publication(events=(draft(4),)))) == 1
    assert len(await engine.publish(Publication(events=(draft(4),)))) == 1


async def test_board_rows_are_versioned(engine: Engine) -> None:
    await put(engine, row("a", 1300.0, version=5))
    await put(engine, row("a", 1100.0, version=4))  # older, arriving late
    await put(engine, row("a", 1000.0, version=5))  # same version again
    assert (await engine.board_player("a")) == (1, row("a", 1300.0, version=5))
    await put(engine, row("a", 1250.0, version=6, wins=1, games=1))
    assert (await engine.board_player("a")) == (1, row("a", 1250.0, version=6, wins=1, games=1))
    # board-only publications append no event
    head = await engine.head()
    await put(engine, row("b", 1.0))
    assert await engine.head() == head


async def test_ranks_ties_pages_and_neighbours(engine: Engine) -> None:
    await put(
        engine,
        row("zed", 1500.0),
        row("carl", 1200.0),
        row("anna", 1200.0),
        row("bob", 1200.0),
        row("dora", 1000.0),
        row("eve", -5.5),
    )
    order = ["zed", "anna", "bob", "carl", "dora", "eve"]
    assert await board_ids(engine) == order

    page, total = await engine.board_page(1, 3)
    assert total == 6
    assert [(rank, entry.player_id) for rank, entry in page] == [
        (2, "anna"),
        (3, "bob"),
        (4, "carl"),
    ]
    assert await engine.board_page(6, 10) == ([], 6)
    assert await engine.board_page(10, 10) == ([], 6)
    page, _ = await engine.board_page(4, 100)
    assert [(rank, entry.player_id) for rank, entry in page] == [(5, "dora"), (6, "eve")]
    assert page[0][1].as_entry(page[0][0]) == {
        "rank": 5,
        "player_id": "dora",
        "name": "DORA",
        "rating": 1000.0,
        "wins": 0,
        "losses": 0,
        "draws": 0,
    }

    for rank, player_id in enumerate(order, start=1):
        found = await engine.board_player(player_id)
        assert found is not None and found[0] == rank and found[1].player_id == player_id
    assert await engine.board_player("nobody") is None

    async def around(player_id: str, radius: int) -> list[tuple[int, str]]:
        return [(r, e.player_id) for r, e in await engine.board_around(player_id, radius)]

    assert await around("zed", 2) == [(1, "zed"), (2, "anna"), (3, "bob")]
    assert await around("eve", 2) == [(4, "carl"), (5, "dora"), (6, "eve")]
    assert await around("bob", 1) == [(2, "anna"), (3, "bob"), (4, "carl")]
    assert await around("bob", 0) == [(3, "bob")]
    assert await around("carl", 10) == [(i, p) for i, p in enumerate(order, start=1)]
    assert await around("nobody", 3) == []

    # a rating change moves the player
    await put(engine, row("eve", 2000.0, version=2))
    assert await board_ids(engine) == ["eve", "zed", "anna", "bob", "carl", "dora"]


async def test_board_replace(engine: Engine) -> None:
    await put(engine, row("a", 1300.0, 3), row("b", 1200.0, 3), row("c", 1100.0, 3))
    await engine.board_replace(rows(row("d", 900.0, 1), row("b", 1000.0, 1), row("e", 1000.0, 2)))
    assert await board_ids(engine) == ["b", "e", "d"]
    assert (await engine.board_page(0, 10))[1] == 3
    assert await engine.board_player("a") is None
    assert await engine.board_player("b") == (1, row("b", 1000.0, 1))
    # versions now come from the replacement
    await put(engine, row("d", 1500.0, 2))
    assert await board_ids(engine) == ["d", "b", "e"]
    await engine.board_replace(rows())
    assert await engine.board_page(0, 10) == ([], 0)
    await put(engine, row("x", 1.0))
    assert await board_ids(engine) == ["x"]


async def test_board_replace_keeps_rows_published_while_it_loads(engine: Engine) -> None:
    """A change committed after the rebuild read SQL is published while the rebuild runs:
    the new board has it (its version beats the loaded row), and newcomers too."""
    await put(engine, row("a", 1000.0, 1), row("b", 900.0, 1))

    async def load_then_a_commit_lands() -> list[BoardEntry]:
        loaded = [row("a", 1000.0, 1), row("b", 900.0, 1)]
        await put(engine, row("b", 1500.0, 2), row("new", 800.0, 1))
        return loaded

    await engine.board_replace(load_then_a_commit_lands)
    assert await board_ids(engine) == ["b", "a", "new"]
    assert await engine.board_player("b") == (1, row("b", 1500.0, 2))


async def test_board_replace_is_never_seen_partial(engine: Engine) -> None:
    old = [row(f"old{i:04d}", float(i), 1) for i in range(1200)]
    new = [row(f"new{i:04d}", float(i), 1) for i in range(1500)]
    await engine.board_replace(rows(*old))
    seen: set[int] = set()
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            _, total = await engine.board_page(0, 1)
            seen.add(total)
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    await engine.board_replace(rows(*new))
    done.set()
    await task
    assert seen <= {1200, 1500}
    assert (await engine.board_page(0, 1))[1] == 1500


async def test_read_after(engine: Engine) -> None:
    start = await engine.head()
    events = []
    for n in range(10):
        events += await engine.publish(Publication(events=(draft(n),)))
    head = await engine.head()
    assert head == start + 10

    got = await engine.read_after(start, 100)
    assert [e.text for e in got] == [e.text for e in events]
    assert [e.seq for e in await engine.read_after(start + 3, 4)] == [
        start + 4,
        start + 5,
        start + 6,
        start + 7,
    ]
    assert [(e.seq, e.cursor, e.rooms, e.name) for e in await engine.read_after(head - 1, 5)] == [
        (events[-1].seq, events[-1].cursor, events[-1].rooms, events[-1].name)
    ]
    assert await engine.read_after(head, 100) == []
    for bad in (head + 1, head + 1000, -1):
        with pytest.raises(LogGap) as gap:
            await engine.read_after(bad, 10)
        assert gap.value.reason == "unknown"


async def test_empty_log(engine: Engine) -> None:
    assert await engine.head() == 0
    assert await engine.read_after(0, 10) == []
    with pytest.raises(LogGap, match="unknown"):
        await engine.read_after(1, 10)
    assert engine.epoch and "." not in engine.epoch


async def test_read_after_expired_when_trimmed(make_engine: EngineFactory) -> None:
    engine = await make_engine(event_log_size=100)
    for batch in range(5):
        await engine.publish(Publication(events=tuple(draft(batch * 30 + n) for n in range(30))))
    head = await engine.head()
    assert head == 150
    # exactly event_log_size events are retained
    kept = await engine.read_after(head - 100, 1000)
    assert [e.seq for e in kept] == list(range(head - 99, head + 1))
    for seq in (head - 101, 10, 0):
        with pytest.raises(LogGap) as gap:
            await engine.read_after(seq, 10)
        assert gap.value.reason == "expired"
    with pytest.raises(LogGap, match="unknown"):
        await engine.read_after(head + 1, 10)


# live delivery --------------------------------------------------------------------------------
async def test_listen_delivers_every_event_once_in_order(engine: Engine) -> None:
    collector = Collector(engine)
    start = await engine.head()
    results = await asyncio.gather(
        *(
            engine.publish(Publication(events=tuple(draft(i * 10 + j) for j in range(i % 3 + 1))))
            for i in range(40)
        )
    )
    published = sorted((e for events in results for e in events), key=lambda e: e.seq)
    assert [e.seq for e in published] == list(range(start + 1, start + 1 + len(published)))
    marker = await collector.flush(engine)
    assert [e.seq for e in collector.events] == list(range(start + 1, marker.seq + 1))
    assert [e.text for e in collector.events[:-1]] == [e.text for e in published]
    # duplicates of a publication are not delivered again
    await engine.publish(Publication(key="once", events=(draft(),)))
    await engine.publish(Publication(key="once", events=(draft(),)))
    marker2 = await collector.flush(engine)
    assert [e.seq for e in collector.events] == list(range(start + 1, marker2.seq + 1))


# presence -------------------------------------------------------------------------------------
async def test_presence_transitions_once(engine: Engine) -> None:
    collector = Collector(engine)

    def presence() -> list[tuple[str, dict[str, object]]]:
        return [
            (e.name, json.loads(e.text)["data"]) for e in collector.events if "presence" in e.rooms
        ]

    assert await engine.online_count() == 0
    assert not await engine.is_online("alice")
    await engine.presence_enter("alice")
    await engine.presence_enter("alice")  # a second tab
    await collector.flush(engine)
    assert presence() == [("player:online", {"player_id": "alice", "online_count": 1})]
    assert await engine.is_online("alice") and await engine.online_count() == 1

    await engine.presence_enter("bob")
    await engine.presence_leave("alice")  # one tab of two closed: still online
    await collector.flush(engine)
    assert presence()[1:] == [("player:online", {"player_id": "bob", "online_count": 2})]
    assert await engine.online_count() == 2

    await engine.presence_leave("alice")  # the last one
    await collector.flush(engine)
    assert presence()[2:] == [("player:offline", {"player_id": "alice", "online_count": 1})]
    assert not await engine.is_online("alice") and await engine.is_online("bob")
    assert await engine.online_count() == 1

    await engine.presence_leave("alice")  # more leaves than enters change nothing
    await engine.presence_leave("nobody")
    await collector.flush(engine)
    assert len(presence()) == 3
    assert await engine.online_count() == 1

    # the events are in the log, in the envelope, byte-identical to build_event's
    for event in [e for e in collector.events if "presence" in e.rooms]:
        envelope = json.loads(event.text)
        assert envelope["rooms"] == ["presence"]
        source = presence_draft(
            event.name, envelope["data"]["player_id"], envelope["data"]["online_count"]
        )
        assert event.text == build_event(engine.epoch, event.seq, source, envelope["ts"]).text
        [logged] = await engine.read_after(event.seq - 1, 1)
        assert logged.text == event.text


async def test_presence_of_odd_player_ids(engine: Engine) -> None:
    collector = Collector(engine)
    odd = 'élodie "the" \\ </script>\n 名前'
    await engine.presence_enter(odd)
    await collector.flush(engine)
    [online] = collector.named("player:online")
    assert json.loads(online.text)["data"] == {"player_id": odd, "online_count": 1}
    assert (
        online.text
        == build_event(
            engine.epoch,
            online.seq,
            presence_draft("player:online", odd, 1),
            json.loads(online.text)["ts"],
        ).text
    )
    assert await engine.is_online(odd)
    await engine.presence_leave(odd)
    await collector.flush(engine)
    assert not await engine.is_online(odd)


async def test_poll_presence(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_module, "POLL_PRESENCE_SECONDS", 0.4)
    monkeypatch.setattr(redis_module, "POLL_PRESENCE_SECONDS", 0.4)
    collector = Collector(engine)
    await engine.presence_poll("carol")
    await engine.presence_poll("carol")
    assert await engine.is_online("carol") and await engine.online_count() == 1
    # a connection during the poll window: no event for it, and none when the poll expires
    await engine.presence_enter("dave")
    await engine.presence_poll("dave")
    await collector.wait_for(
        lambda ev: any(e.name == "player:offline" for e in ev), 5.0, "the poll presence to expire"
    )
    await collector.flush(engine)
    assert [
        (e.name, json.loads(e.text)["data"]["player_id"])
        for e in collector.events
        if "presence" in e.rooms
    ] == [("player:online", "carol"), ("player:online", "dave"), ("player:offline", "carol")]
    assert not await engine.is_online("carol") and await engine.is_online("dave")
    assert await engine.online_count() == 1


async def test_a_call_to_this_instance(engine: Engine) -> None:
    async def handler(request: dict[str, object]) -> dict[str, object]:
        return {"status": 200, "got": request}

    engine.on_call(handler)
    assert await engine.call(engine.instance_id, {"a": 1}, 1.0) == {"status": 200, "got": {"a": 1}}
    with pytest.raises(NoSuchInstance):
        await engine.call("0000ffff", {}, 1.0)


# a property: the board order is the documented sort ------------------------------------------
ratings = st.one_of(
    st.sampled_from([1200.0, 1200.0, 1000.5, 0.0, -0.0, -3.25]),
    st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False),
)
puts = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d", "e", "ab", "B", "é", "a b"]),
            ratings,
            st.integers(1, 4),
        ),
        min_size=1,
        max_size=4,
    ),
    max_size=12,
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=puts)
async def test_board_order_property(
    backend: str | None, batches: list[list[tuple[str, float, int]]]
) -> None:
    engine: Engine
    if backend is None:
        engine = MemoryEngine()
    else:
        engine = RedisEngine(backend, prefix=f"prop:{uuid.uuid4().hex}:")
    await engine.start()
    await ready_board(engine)
    try:
        model: dict[str, BoardEntry] = {}
        for batch in batches:
            entries = tuple(row(pid, rating, version) for pid, rating, version in batch)
            await engine.publish(Publication(board=entries))
            for entry in entries:
                current = model.get(entry.player_id)
                if current is None or current.version < entry.version:
                    model[entry.player_id] = entry
        expected = sorted(model.values(), key=lambda e: (-e.rating, e.player_id))
        page, total = await engine.board_page(0, 100)
        assert total == len(expected)
        assert [entry for _rank, entry in page] == expected
        assert [rank for rank, _entry in page] == list(range(1, len(expected) + 1))
        for rank, entry in enumerate(expected, start=1):
            assert await engine.board_player(entry.player_id) == (rank, entry)
    finally:
        await engine.stop()
