"""Long-poll answers read from the log for pollers behind the head (engine/poll_answers.py)."""

from __future__ import annotations

import json

from quart_app.engine.base import Publication
from quart_app.engine.hub import Hub

from .conftest import Collector, draft

ROOMS = ("matches",)


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
