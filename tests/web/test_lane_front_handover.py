"""web/lane_front.py's hand-over of a connection to Hypercorn: reading stays paused while
Hypercorn's reader is full, the keep-alive limit counts the lane's requests, and a
connection lost while the lane held its bytes starts nothing. (Each was found in review and
failed first.)

Mostly unit tests: a FrontConnection on a fake transport and a fake Hypercorn connection
callback (the closure cells Front reads), so the interleaving of reads, pauses and the
hand-over is exact instead of depending on how the kernel cuts a flood into reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config

from quart_app.web import fast_lane
from quart_app.web.fast_lane import arrival_budget
from quart_app.web.lane_front import STREAM_READER_LIMIT, Front, FrontConnection
from quart_app.web.turns import ANSWERS_PER_TURN

from ..http_wire import exchange

POLL = b"GET /api/poll?rooms=matches HTTP/1.1\r\nHost: t\r\n\r\n"
DECLINED = b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n"  # (not the lane's: Hypercorn's)


class _Transport(asyncio.Transport):
    """What the front and asyncio's StreamReader call on a socket transport."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True
        self.closing = False
        self.protocol: Any = None
        self.written = b""

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


class _Answer:
    status = 200
    headers: list[tuple[bytes, bytes]] = []
    close = False


class _Poll:
    """The app's LongPoll: its answer waits until the test releases it."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def answer(self, method: str, query: bytes, headers: Any) -> _Answer:
        self.waiting.set()
        await self.release.wait()
        return _Answer()

    def encoded(self, answer: _Answer, *, close: bool) -> bytes:
        return b"HTTP/1.1 200 \r\ncontent-length: 0\r\n\r\n"


class _Routes:
    def __init__(self, poll: _Poll) -> None:
        self.long_poll = poll
        self.event_stream = None


class _Wrapped:  # (Hypercorn's ASGIWrapper: the app under `.app`)
    def __init__(self, routes: _Routes) -> None:
        self.app = routes


def _hypercorn_callback(
    app: Any, config: Config, context: WorkerContext, server_tasks: set[Any], handed: list[Any]
) -> Any:
    """A stand-in for hypercorn.asyncio.run's _server_callback, with its closure cells."""

    async def _server_callback(reader: asyncio.StreamReader, writer: Any) -> None:
        _ = (app, config, context, server_tasks)
        handed.append(reader)

    return _server_callback


async def _until(predicate: Any, what: str) -> None:
    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(0)

    try:
        await asyncio.wait_for(wait(), 10)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_a_flood_handed_to_hypercorn_stays_paused_while_its_reader_is_full() -> None:
    # A client pipelines a lane poll and a request the lane declines, then floods bytes
    # while the poll waits: the front stops reading (its pause). Once the poll is answered
    # the connection is Hypercorn's with everything read so far, more than the reader's
    # limit: reading must stay paused until Hypercorn reads that down (asyncio's
    # backpressure), as it does without the lane.
    poll = _Poll()
    config = Config()
    context = WorkerContext(None)
    handed: list[asyncio.StreamReader] = []
    callback = _hypercorn_callback(_Wrapped(_Routes(poll)), config, context, set(), handed)
    front = Front(callback, 2)  # (AF_INET)
    connection = FrontConnection(front)
    transport = _Transport()
    connection.connection_made(transport)

    try:
        connection.data_received(POLL + DECLINED)
        await asyncio.wait_for(poll.waiting.wait(), 10)
        flood = b"x" * (3 * STREAM_READER_LIMIT)
        connection.data_received(flood)
        assert not transport.reading  # (the front's own pause, while the poll waits)

        poll.release.set()
        await _until(lambda: handed, "the hand-over to Hypercorn")
        reader = handed[0]
        assert transport.protocol is not connection
        assert len(reader._buffer) > 2 * STREAM_READER_LIMIT  # (all of it, in order)
        assert bytes(reader._buffer).startswith(DECLINED + b"xxx")
        assert not transport.reading, "reading resumed with the reader over its limit"
    finally:
        transport.close()  # (the hand-over's StreamWriter then has nothing to close when collected)


KEEP_ALIVE_MAX_REQUESTS = 1000  # Hypercorn's keep_alive_max_requests (rankpulse serve's)


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({}, id="lane"),
        pytest.param({"FAST_LANE": "false"}, id="hypercorn-alone"),
    ],
)
async def test_the_keep_alive_request_limit_counts_requests_from_before_a_hand_over(
    shared_servers: Any, env: dict[str, str]
) -> None:
    # Without the lane (and on the lane of Hypercorn's own connections) the 1,000th request
    # on one connection is answered with `connection: close` and the connection closes,
    # whoever served the requests before it.
    server = shared_servers(env=env)
    target = f"/api/poll?rooms=matches&timeout=0&access_token={server.token('viewer')}"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for _ in range(KEEP_ALIVE_MAX_REQUESTS - 1):
            status, headers, _body = await exchange(reader, writer, target)
            assert status == 200 and headers.get(b"connection") != b"close"
        status, headers, _body = await exchange(reader, writer, "/readyz")  # (Hypercorn's)
        assert status == 200
        assert headers.get(b"connection") == b"close", headers
        assert await asyncio.wait_for(reader.read(), 30) == b""
    finally:
        writer.close()


async def test_a_connection_lost_while_the_lane_held_its_bytes_starts_no_hypercorn_task() -> None:
    # The client sends the start of a lane head and goes away (FIN, then RST) while the lane
    # waits for its turn's place (a crowd arriving: the arrival budget is spent). Handing
    # the partial head to Hypercorn then would start a connection task on a transport whose
    # loss only the front heard: it waited in wait_closed() until shutdown. Nobody is left to
    # answer, so nothing starts, and the connection leaves the idle timers.
    config = Config()
    context = WorkerContext(None)
    started: list[asyncio.StreamReader] = []
    callback = _hypercorn_callback(_Wrapped(_Routes(_Poll())), config, context, set(), started)
    front = Front(callback, 2)  # (AF_INET)
    connection = FrontConnection(front)
    transport = _Transport()
    connection.connection_made(transport)

    connection.data_received(b"GET /api/poll?rooms=matches HTTP/1.1\r\nHo")
    budget = arrival_budget(asyncio.get_running_loop())
    for _ in range(ANSWERS_PER_TURN):  # (this turn's places, taken by a crowd)
        await budget.take()
    await asyncio.sleep(0)  # (the lane took the bytes and waits for a place)
    assert connection._read == b"" and connection._serving is not None

    connection.eof_received()
    transport.close()
    connection.connection_lost(None)
    await _until(lambda: connection._serving is None, "the lane to be done with the bytes")
    await asyncio.sleep(0)  # (a task the hand-over created would have started by now)
    assert started == []
    assert connection.idle_timer not in front.idle.armed


async def test_a_poll_whose_client_left_leaves_no_idle_timer_behind() -> None:
    poll = _Poll()
    callback = _hypercorn_callback(
        _Wrapped(_Routes(poll)), Config(), WorkerContext(None), set(), []
    )
    front = Front(callback, 2)
    connection = FrontConnection(front)
    transport = _Transport()
    connection.connection_made(transport)
    connection.data_received(POLL)
    await asyncio.wait_for(poll.waiting.wait(), 10)
    transport.close()
    connection.connection_lost(None)  # (gone while its poll waited)
    poll.release.set()
    await _until(lambda: connection._serving is None, "the poll to be answered")
    # Not armed again: an armed timer keeps the connection (and its lane) for another
    # keep_alive_timeout, per poller that left.
    assert connection.idle_timer not in front.idle.armed


class _FailingPoll(_Poll):
    async def answer(self, method: str, query: bytes, headers: Any) -> _Answer:
        raise RuntimeError("a bug in the poll handler")


async def test_a_failure_while_serving_closes_the_connection() -> None:
    # As Hypercorn's connection ends when its task fails: never a connection left open with
    # no idle timer, its client waiting for an answer that will not come.
    callback = _hypercorn_callback(
        _Wrapped(_Routes(_FailingPoll())), Config(), WorkerContext(None), set(), []
    )
    front = Front(callback, 2)
    connection = FrontConnection(front)
    transport = _Transport()
    connection.connection_made(transport)
    connection.data_received(POLL)
    serving = connection._serving
    assert serving is not None
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(serving, 10)
    assert transport.closing


async def test_pipelined_polls_are_parsed_where_they_lie_not_copied_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One read can hold thousands of small pipelined polls: cutting each answered one off the
    # front of the buffer copied the rest every time (quadratic in the read's size).
    parsed: list[tuple[int, int]] = []
    parse_head = fast_lane.parse_head

    def spy(data: bytes, max_head: int, memo: Any = None, start: int = 0) -> Any:
        parsed.append((id(data), start))
        return parse_head(data, max_head, memo, start)

    monkeypatch.setattr(fast_lane, "parse_head", spy)
    poll = _Poll()
    poll.release.set()  # (answered at once)
    callback = _hypercorn_callback(
        _Wrapped(_Routes(poll)), Config(), WorkerContext(None), set(), []
    )
    connection = FrontConnection(Front(callback, 2))
    transport = _Transport()
    connection.connection_made(transport)
    connection.data_received(POLL * 200)
    await _until(lambda: connection._serving is None, "the polls to be answered")
    assert transport.written.count(b"HTTP/1.1 200 ") == 200
    assert len({buffer for buffer, _ in parsed}) == 1  # (one buffer, read in place)
    assert [start for _, start in parsed] == [index * len(POLL) for index in range(200)]
