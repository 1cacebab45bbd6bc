"""Long-pollers at the head are woken a slice at a time (fairness, issue 9), and none of them
loses an event when its own timeout falls in the same turn of the loop as the release."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from quart_app.engine.base import Draft, Publication
from quart_app.engine.poll_answers import WAKE_SLICE

from ..helpers import Api, app_poll

ROOM = "matches"
POLLERS = 3 * WAKE_SLICE + 5  # several slices


async def _until(check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _received(api: Api, first: dict[str, Any]) -> list[Any]:
    """What one poller got: its answer, and (after an empty one) its next poll's answer."""
    answer = first
    if not answer["events"]:
        answer = await app_poll(api, ROOM, answer["cursor"], timeout=0)
    return [event["data"]["n"] for event in answer["events"]]


async def test_no_poller_skips_an_event_released_as_its_timeout_expires(memory_api: Api) -> None:
    start = (await app_poll(memory_api, ROOM))["cursor"]
    polls = memory_api.rt.hub.polls
    pollers = [
        asyncio.create_task(app_poll(memory_api, ROOM, start, timeout=0.3)) for _ in range(POLLERS)
    ]
    await _until(lambda: polls.waiting_groups == 1 and _waiting(memory_api) == POLLERS)
    # Every poll's deadline passes while the loop is busy (a deliberate stall, not a wait),
    # then the event that releases them arrives: timeouts and wake-ups meet in one turn.
    time.sleep(0.5)
    await memory_api.rt.engine.publish(
        Publication(events=(Draft((ROOM,), "announcement", {"n": 1}),))
    )
    answers = await asyncio.gather(*pollers)
    received = [await _received(memory_api, answer) for answer in answers]
    assert received == [[1]] * POLLERS


async def test_a_crowd_is_woken_a_slice_per_turn_of_the_loop(memory_api: Api) -> None:
    start = (await app_poll(memory_api, ROOM))["cursor"]
    polls = memory_api.rt.hub.polls
    pollers = [asyncio.create_task(app_poll(memory_api, ROOM, start)) for _ in range(POLLERS)]
    await _until(lambda: polls.waiting_groups == 1 and _waiting(memory_api) == POLLERS)
    wakes = list(_group(memory_api).waiters)
    await memory_api.rt.engine.publish(
        Publication(events=(Draft((ROOM,), "announcement", {"n": 1}),))
    )
    assert sum(wake.done() for wake in wakes) == WAKE_SLICE  # the first slice, at once
    await asyncio.sleep(0)  # one turn of the loop: one more slice
    assert sum(wake.done() for wake in wakes) == 2 * WAKE_SLICE
    answers = await asyncio.gather(*pollers)
    assert all([e["data"]["n"] for e in a["events"]] == [1] for a in answers)


def _group(api: Api) -> Any:
    (group,) = api.rt.hub.polls._groups.values()
    return group


def _waiting(api: Api) -> int:
    waiters = _group(api).waiters
    return waiters if isinstance(waiters, int) else len(waiters)  # (a count before slices)
