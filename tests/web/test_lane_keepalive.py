"""Long-polls answered by the fast lane itself (web/fast_lane.py `_answer_poll`: h11 never
leaves IDLE, the lane does what Hypercorn does around a request), against real `rankpulse
serve` processes and raw sockets: the idle timer is re-armed after each answer, SIGTERM closes
a connection idle after one at once, and a problem it answers (to a poll or an SSE request) is
framed and worded as Hypercorn answers it, with a Date, the connection kept for the next poll."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Callable

import pytest

from ..helpers import lane_requests
from ..http_wire import exchange
from ..services import LiveServer

KEEP_ALIVE = 1.0


async def _open(server: LiveServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _closed_within(reader: asyncio.StreamReader, limit: float) -> float:
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(1), limit) == b"", "bytes on an idle connection"
    return time.monotonic() - started


async def test_an_idle_connection_after_lane_polls_closes_after_the_timeout(
    live_servers: Callable[..., LiveServer],
) -> None:
    server = live_servers(env={"KEEP_ALIVE_SECONDS": str(KEEP_ALIVE)})
    token = server.token("viewer")
    before = lane_requests(server.url)
    reader, writer = await _open(server)
    try:
        for _ in range(2):
            status, _, body = await exchange(
                reader, writer, f"/api/poll?rooms=matches&timeout=0&access_token={token}"
            )
            assert status == 200 and "cursor" in json.loads(body)
        assert lane_requests(server.url) - before == 2  # both answered by the lane
        # Idle after the lane's answer: closed by KEEP_ALIVE_SECONDS (Hypercorn's default, 5 s,
        # is past the limit), not at once.
        waited = await _closed_within(reader, KEEP_ALIVE + 3)
        assert waited >= KEEP_ALIVE * 0.8, f"closed after {waited:.2f} s"
    finally:
        writer.close()


async def test_sigterm_closes_a_connection_idle_after_a_lane_poll_at_once(
    live_servers: Callable[..., LiveServer],
) -> None:
    # A keep-alive timeout far beyond the test: only the shutdown can close it.
    server = live_servers(env={"KEEP_ALIVE_SECONDS": "120", "DRAIN_SECONDS": "1"})
    token = server.token("viewer")
    reader, writer = await _open(server)
    try:
        status, _, _ = await exchange(
            reader, writer, f"/api/poll?rooms=matches&timeout=0&access_token={token}"
        )
        assert status == 200 and lane_requests(server.url) >= 1
        server.sigterm()
        await _closed_within(reader, 1 + 5)  # DRAIN_SECONDS + 5 s (PROTOCOL 3.7)
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["/api/poll", "/api/events"])
async def test_problems_from_the_lane_match_hypercorns_and_keep_the_connection(
    shared_live_server: LiveServer, live_servers: Callable[..., LiveServer], path: str
) -> None:
    # Polls and SSE streams alike: a refusal is answered whole, framed by its length, and
    # the connection serves the next request.
    without_lane = live_servers(env={"FAST_LANE": "false"})
    answers: dict[str, list[tuple[int, dict[bytes, bytes], bytes]]] = {}
    for name, server in (("lane", shared_live_server), ("hypercorn", without_lane)):
        token = server.token("viewer")
        problems = [
            f"{path}?rooms=matches",  # no token: 401
            f"{path}?rooms=matches&top=0&access_token={token}",  # a bad top: 400
            f"{path}?access_token={token}",  # no rooms: 400
            f"{path}?rooms=matches&access_token=not-a-token",  # 401
        ]
        before = _lane_requests(server)
        reader, writer = await _open(server)
        try:
            answers[name] = [await exchange(reader, writer, target) for target in problems]
            # ... and the same connection still serves a poll.
            status, headers, body = await exchange(
                reader, writer, f"/api/poll?rooms=matches&timeout=0&access_token={token}"
            )
            assert status == 200 and "cursor" in json.loads(body)
            # RFC 9110 6.6.1: an origin server with a clock sends Date in its 2xx and 4xx.
            assert _is_http_date(headers[b"date"]), headers
        finally:
            writer.close()
        taken = _lane_requests(server) - before
        assert taken == (len(problems) + 1 if name == "lane" else 0), (name, taken)
    for (status, headers, body), (status_h, headers_h, body_h) in zip(
        answers["lane"], answers["hypercorn"], strict=True
    ):
        assert status == status_h and status in (400, 401)
        assert headers[b"content-type"] == headers_h[b"content-type"] == b"application/problem+json"
        assert headers.get(b"www-authenticate") == headers_h.get(b"www-authenticate")
        assert json.loads(body) == json.loads(body_h)
        assert _is_http_date(headers[b"date"]) and _is_http_date(headers_h[b"date"])


def _lane_requests(server: LiveServer) -> int:
    """Polls and streams the lane took."""
    return lane_requests(server.url, "/api/poll") + lane_requests(server.url, "/api/events")


def _is_http_date(value: bytes) -> bool:
    """An IMF-fixdate within a minute of now (RFC 9110 5.6.7)."""
    sent = email.utils.parsedate_to_datetime(value.decode())
    return value.endswith(b" GMT") and abs(time.time() - sent.timestamp()) < 60
