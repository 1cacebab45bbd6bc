"""The fast lane parses a crowd's heads a budget per turn of the event loop (fairness, issue 9).

A crowd of pollers whose next heads arrive together used to be parsed and set up by the lane
all in one turn (up to 635 measured), before any of them reached the long-poll's own budget: a
write (POST) on another connection waited behind the whole crowd. Here a real Hypercorn server
with the lane (in this test's event loop, so that its turns can be counted) gets a crowd's
heads at once: the lane parses at most ANSWERS_PER_TURN of them per turn, every one is
answered, and a POST that arrives with the crowd is not held back by the lane's budget.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import hypercorn.asyncio
import hypercorn.asyncio.run as hypercorn_run
import pytest
from hypercorn.config import Config

from quart_app.web import fast_lane, hypercorn_fast
from quart_app.web.turns import ANSWERS_PER_TURN

from ..helpers import LoopTurns
from ..services import free_port

CROWD = 4 * ANSWERS_PER_TURN + 5
TIMEOUT = 30


class StubApp:
    """An ASGI app that answers every request at once with 200 and notes the turn it was
    reached in (the lane's budget is what is tested, not the poll handler)."""

    def __init__(self) -> None:
        self.turns: LoopTurns | None = None
        self.reached: list[tuple[str, int]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.reached.append((scope["method"], self.turns.count if self.turns else -1))
        while (await receive()).get("more_body"):
            pass
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def lane_server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[StubApp, int]]:
    monkeypatch.setattr(hypercorn_run, "TCPServer", hypercorn_fast.TimerTCPServer)
    monkeypatch.setattr(hypercorn_fast, "_fast_lane", True)
    app = StubApp()
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    stop = asyncio.Event()
    serving = asyncio.create_task(hypercorn.asyncio.serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        for _ in range(200):  # until it listens
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            break
        yield app, port
    finally:
        stop.set()
        await asyncio.wait_for(serving, TIMEOUT)


POLL = b"GET /api/poll?rooms=matches HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
POST = b"POST /api/anything HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return await reader.readexactly(2)


async def test_a_crowd_of_lane_heads_arriving_at_once_is_parsed_a_budget_per_turn(
    lane_server: tuple[StubApp, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, port = lane_server
    crowd = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CROWD)]
    writer_reader = await asyncio.open_connection("127.0.0.1", port)
    # One request each first: every connection accepted, idle, its server task reading.
    for _, writer in [*crowd, writer_reader]:
        writer.write(POLL)
    for reader, _ in [*crowd, writer_reader]:
        assert await asyncio.wait_for(_answer(reader), TIMEOUT) == b"ok"

    turns = app.turns = LoopTurns()
    parsed: Counter[int] = Counter()
    parse_head = fast_lane.parse_head

    def spy(data: bytes, max_head: int, memo: Any = None, start: int = 0) -> Any:
        if data.startswith(POLL, start):  # (the POST's head is looked at too, outside the budget)
            parsed[turns.count] += 1
        return parse_head(data, max_head, memo, start)

    monkeypatch.setattr(fast_lane, "parse_head", spy)
    app.reached.clear()
    try:
        for _, writer in crowd:  # all in this turn: they arrive together
            writer.write(POLL)
        writer_reader[1].write(POST)
        answers = await asyncio.wait_for(
            asyncio.gather(*(_answer(reader) for reader, _ in crowd)), TIMEOUT
        )
        assert await asyncio.wait_for(_answer(writer_reader[0]), TIMEOUT) == b"ok"
    finally:
        turns.stop()
        for _, writer in [*crowd, writer_reader]:
            writer.close()
    assert answers == [b"ok"] * CROWD
    assert sum(parsed.values()) == CROWD
    assert max(parsed.values()) <= ANSWERS_PER_TURN, sorted(parsed.items())
    # The POST is Hypercorn's: it reached the app before the lane got through the crowd.
    post_turn = next(turn for method, turn in app.reached if method == "POST")
    last_poll_turn = max(turn for method, turn in app.reached if method == "GET")
    assert post_turn < last_poll_turn, app.reached


def test_only_heads_that_may_be_the_lanes_wait_for_its_budget() -> None:
    assert fast_lane.may_be_lane(POLL)
    assert fast_lane.may_be_lane(b"GET /api/ev")  # (a head split across segments)
    assert fast_lane.may_be_lane(b"GET /api/events?rooms=a HTTP/1.1\r\n")
    assert not fast_lane.may_be_lane(POST)
    assert not fast_lane.may_be_lane(b"GET /api/leaderboard HTTP/1.1\r\n")
