"""Long-poll answers are shared (issue 9): pollers that ask the same question (cursor, rooms)
get the same bytes, encoded once, whether the answer comes from the log (they are behind) or
from the fan-out (they wait at the head). Through the app, on the memory engine."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from quart_app.engine.base import Draft, Publication

from ..helpers import Api


async def _announce(api: Api, room: str, n: int) -> None:
    await api.rt.engine.publish(Publication(events=(Draft((room,), "announcement", {"n": n}),)))


async def _poll(api: Api, rooms: str, cursor: str | None = None, timeout: float = 10) -> bytes:
    path = f"/api/poll?rooms={rooms}&timeout={timeout:g}"
    if cursor:
        path += f"&cursor={cursor}"
    response = await api.client.get(path, headers={"Authorization": f"Bearer {api.reader}"})
    assert response.status_code == 200
    body: bytes = await response.get_data()
    return body


async def _until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _ns(body: bytes) -> list[Any]:
    return [event["data"]["n"] for event in json.loads(body)["events"]]


async def test_pollers_behind_the_head_share_one_encoded_answer(memory_api: Api) -> None:
    start = json.loads(await _poll(memory_api, "matches"))["cursor"]
    for n in range(3):
        await _announce(memory_api, "matches", n)
        await _announce(memory_api, "presence", n)  # another room: passed over
    polls = memory_api.rt.hub.polls
    before = polls.encodings
    first, second, third = await asyncio.gather(
        *(_poll(memory_api, "matches", start) for _ in range(3))
    )
    assert first == second == third  # byte for byte
    assert _ns(first) == [0, 1, 2]
    assert polls.encodings == before + 1
    # ...and a late poller at the same cursor gets the same bytes, still without encoding.
    assert await _poll(memory_api, "matches", start) == first
    assert polls.encodings == before + 1


async def test_pollers_waiting_at_the_head_are_woken_with_one_shared_answer(
    memory_api: Api,
) -> None:
    head = json.loads(await _poll(memory_api, "matches,presence"))["cursor"]
    polls = memory_api.rt.hub.polls
    before = polls.encodings
    # The same rooms in another order are the same question.
    waiting = [
        asyncio.create_task(_poll(memory_api, rooms, head))
        for rooms in ("matches,presence", "presence,matches", "matches,presence")
    ]
    await _until(lambda: polls.waiting_groups == 1 and not any(t.done() for t in waiting))
    await _announce(memory_api, "leaderboard:global", 0)  # not theirs: they keep waiting
    await _announce(memory_api, "matches", 7)
    answers = await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert answers[0] == answers[1] == answers[2]
    assert _ns(answers[0]) == [7]
    assert polls.encodings == before + 1
    assert polls.waiting_groups == 0


async def test_an_answer_holds_at_most_500_events_and_pages_on(memory_api: Api) -> None:
    start = json.loads(await _poll(memory_api, "matches"))["cursor"]
    for n in range(1100):
        await _announce(memory_api, "matches", n)
    got: list[Any] = []
    pages: list[int] = []
    cursor = start
    while len(got) < 1100:
        answer = json.loads(await _poll(memory_api, "matches", cursor, timeout=0))
        pages.append(len(answer["events"]))
        got += [event["data"]["n"] for event in answer["events"]]
        cursor = answer["cursor"]
    assert pages == [500, 500, 100]
    assert got == list(range(1100))


async def test_polls_of_quiet_rooms_that_time_out_leave_no_waiting_group(memory_api: Api) -> None:
    """A poll that times out on rooms that stay quiet (a finished match) must not leave its
    waiting group behind: one per distinct rooms-key would pile up for ever."""
    head = json.loads(await _poll(memory_api, "matches"))["cursor"]
    polls = memory_api.rt.hub.polls
    answers = await asyncio.gather(
        *(_poll(memory_api, f"match:quiet{n}", head, timeout=0.2) for n in range(20))
    )
    assert all(json.loads(body)["events"] == [] for body in answers)
    assert polls.waiting_groups == 0
