"""A drain answers every pending long-poll at once (PROTOCOL 3.7), and the client resumes
with the answer's cursor elsewhere: that cursor must not pass an event of its rooms that
reached the head after the drain released the pollers' group but before their own turn to
answer came (wake-ups are paced, WAKE_SLICE per turn of the loop). 6a718dd fixed the answer
carrying the head here; this is that case made deterministic, through the app, on the
memory engine: the drain and the event happen in one step of the test, before any poller
runs again."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from quart_app.engine.base import Draft, Publication
from quart_app.engine.poll_answers import WAKE_SLICE

from ..helpers import Api

ROOM = "matches"
POLLERS = WAKE_SLICE + 3  # a slice woken at once, the rest a turn later


async def _poll(api: Api, cursor: str | None = None, timeout: float = 20) -> dict[str, Any]:
    path = f"/api/poll?rooms={ROOM}&timeout={timeout:g}"
    if cursor:
        path += f"&cursor={cursor}"
    response = await api.client.get(path, headers={"Authorization": f"Bearer {api.reader}"})
    assert response.status_code == 200, await response.get_data()
    answer: dict[str, Any] = json.loads(await response.get_data())
    return answer


async def _until(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _ns(answer: dict[str, Any]) -> list[Any]:
    return [event["data"]["n"] for event in answer["events"]]


async def test_pollers_drained_as_an_event_arrives_resume_before_that_event(
    memory_api: Api,
) -> None:
    hub, engine = memory_api.rt.hub, memory_api.rt.engine
    start = (await _poll(memory_api))["cursor"]
    pollers = [asyncio.create_task(_poll(memory_api, start)) for _ in range(POLLERS)]
    await _until(lambda: hub.polls.waiting_pollers == POLLERS)

    # One step, no poller runs in between: the drain releases their group (no streams here:
    # drain() returns without waiting), then an event of their room reaches the head (the
    # memory engine fans out before publish() first yields).
    await hub.drain(1)
    await engine.publish(Publication(events=(Draft((ROOM,), "announcement", {"n": 1}),)))

    answers = await asyncio.wait_for(asyncio.gather(*pollers), 20)
    assert all(answer["events"] == [] for answer in answers)  # a drain answers empty, at once

    # Each client resumes with its cursor on the instance that takes over; here the same one
    # back from its drain (the memory engine serves one instance): it must get the event.
    hub.draining = False
    resumed = await asyncio.gather(*(_poll(memory_api, a["cursor"], timeout=5) for a in answers))
    assert [_ns(answer) for answer in resumed] == [[1]] * POLLERS
