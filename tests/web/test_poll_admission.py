"""A crowd of long-polls that arrives in one turn of the event loop is taken in a budget per
turn (fairness, issue 9): its parsing and first look at the log spread over several turns,
so a write (POST) in between waits for a short turn, not for the whole crowd. None of them
loses or repeats an event."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from quart_app.engine.base import Draft, Publication
from quart_app.web.turns import ANSWERS_PER_TURN

from ..helpers import Api, LoopTurns, app_poll

ROOM = "matches"
CROWD = 3 * ANSWERS_PER_TURN + 5


async def test_a_crowd_arriving_at_once_is_taken_a_budget_per_turn(
    memory_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = memory_api.rt.hub
    start = (await app_poll(memory_api, ROOM))["cursor"]
    for n in range(3):
        await memory_api.rt.engine.publish(
            Publication(events=(Draft((ROOM,), "announcement", {"n": n}),))
        )
    # Where each poll with a cursor starts its work: the turn it is taken in.
    turns = LoopTurns()
    taken: Counter[int] = Counter()
    resume_position = hub.resume_position

    def spy(cursor: str) -> int:
        taken[turns.count] += 1
        return resume_position(cursor)

    monkeypatch.setattr(hub, "resume_position", spy)
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(*(app_poll(memory_api, ROOM, start) for _ in range(CROWD))), 30
        )
    finally:
        turns.stop()
    assert [[e["data"]["n"] for e in a["events"]] for a in answers] == [[0, 1, 2]] * CROWD
    assert sum(taken.values()) == CROWD
    assert max(taken.values()) <= ANSWERS_PER_TURN, sorted(taken.items())
