"""Long-poll answers read from the log for pollers behind the head (engine/poll_answers.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from quart_app.engine import poll_answers
from quart_app.engine.base import Publication
from quart_app.engine.hub import Hub

from .conftest import Collector, draft

ROOMS = ("matches",)
KEYS = [("a",), ("b",), ("a", "b"), ("a", "b", "c")]


def _seq(cursor: str) -> int:
    return int(cursor.rpartition(".")[2])


async def publish(hub: Hub, collector: Collector, n: int) -> None:
    [event] = await hub.engine.publish(Publication(events=(draft(n),)))
    await collector.wait_for(lambda events: event in events)


def numbers(body: bytes | None) -> list[int]:
    assert body is not None
    return [event["data"]["n"] for event in json.loads(body)["events"]]


async def test_a_poller_behind_the_head_gets_every_event_up_to_the_head_not_an_older_read(
    hub: Hub,
) -> None:
    # One poller at position p was answered [1] from the log; then 2 was published. The next
    # poller at p must get [1, 2]: an answer remembered from before 2 is true but short, and
    # cost its pollers a round trip each for 2 (under a crowd, hundreds of ms per event).
    collector = Collector(hub.engine)
    start = hub.head_seq
    await publish(hub, collector, 1)
    first, _ = await hub.polls.read(hub.epoch, start, ROOMS)
    assert numbers(first) == [1]
    await publish(hub, collector, 2)
    second, reached = await hub.polls.read(hub.epoch, start, ROOMS)
    assert numbers(second) == [1, 2]
    assert reached == hub.head_seq


async def test_pollers_at_one_position_share_one_read_while_the_head_stays(hub: Hub) -> None:
    collector = Collector(hub.engine)
    start = hub.head_seq
    await publish(hub, collector, 1)
    await publish(hub, collector, 2)
    before = hub.polls.encodings
    answers = [await hub.polls.read(hub.epoch, start, ROOMS) for _ in range(5)]
    assert hub.polls.encodings == before + 1
    assert all(body is answers[0][0] for body, _ in answers)  # the same bytes, shared


async def test_an_event_of_other_rooms_leaves_a_remembered_answer_shared(hub: Hub) -> None:
    # The answer for pollers of "matches" stays whole while only other rooms get events (a
    # publisher's own room, presence): it is not read and encoded again for each of those.
    collector = Collector(hub.engine)
    start = hub.head_seq
    await publish(hub, collector, 1)
    first, _ = await hub.polls.read(hub.epoch, start, ROOMS)
    encodings = hub.polls.encodings
    [other] = await hub.engine.publish(Publication(events=(draft(9, rooms=("other",)),)))
    await collector.wait_for(lambda events: other in events)
    again, _ = await hub.polls.read(hub.epoch, start, ROOMS)
    assert again is first and hub.polls.encodings == encodings
    await publish(hub, collector, 2)
    last, _ = await hub.polls.read(hub.epoch, start, ROOMS)
    assert numbers(last) == [1, 2]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("publish"), st.sampled_from(["a", "b", "c"])),
            st.tuples(st.just("read"), st.integers(0, 3), st.sampled_from(KEYS)),
        ),
        min_size=1,
        max_size=40,
    )
)
@example(steps=[("publish", "a"), ("read", 0, ("a",)), ("publish", "a"), ("read", 0, ("a",))])
async def test_a_read_always_answers_what_the_log_holds_now(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, steps: list[tuple[str, ...]]
) -> None:
    # Any interleaving of events in three rooms and reads by pollers of several room sets at
    # any position: every answer holds exactly the events of its rooms after its position
    # that the log holds at that moment, whatever was remembered before. (Two entries kept,
    # so entries are evicted and their rooms given up too.)
    monkeypatch.setattr(poll_answers, "READ_CACHE_ENTRIES", 2)
    collector = Collector(hub.engine)
    base = hub.head_seq
    logged: list[tuple[int, str]] = []  # (seq, room)
    for step in steps:
        if step[0] == "publish":
            room = step[1]
            [event] = await hub.engine.publish(Publication(events=(draft(0, rooms=(room,)),)))
            await collector.wait_for(lambda events, event=event: event in events)
            logged.append((event.seq, room))
        else:
            offset, key = int(step[1]), step[2]
            position = base + min(offset, len(logged))
            body, _ = await hub.polls.read(hub.epoch, position, key)
            expected = [seq for seq, room in logged if seq > position and room in key]
            got = [] if body is None else [_seq(e["id"]) for e in json.loads(body)["events"]]
            assert got == expected, (position, key, logged)
