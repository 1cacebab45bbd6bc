"""A keep-alive request sent right after an SSE stream's response ended is answered on the
same connection, with and without the fast lane.

The stream's response ends (its zero chunk) before web/sse.py gives back its slot and
presence (`release_stream`, a Redis round trip or two). Hypercorn recycles h11 at the
response's end, so the client's next request is served while that bookkeeping runs; the lane
must too (LaneSend's `ended` callback: the connection is idle at the response's end, not when
the handler returned). Before, the lane dropped that request and closed the connection (found
in review). Redis is made slow (a 0.5 s proxy) only to make the window wide and the test
deterministic; it is one Redis round trip wide in production.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import pytest

from ..faults import FaultProxy
from ..http_wire import chunks_to_the_end, read_head
from ..services import LiveServer, RedisServer

ROOM = "matches"


@pytest.fixture(name="slow_redis_link")
def _slow_redis_link(own_redis: RedisServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(own_redis.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize("fast_lane", ["true", "false"])
async def test_a_request_sent_right_after_a_stream_ended_is_answered_on_the_same_connection(
    live_servers: Callable[..., LiveServer], slow_redis_link: FaultProxy, fast_lane: str
) -> None:
    server = live_servers(
        env={"REDIS_URL": f"redis://127.0.0.1:{slow_redis_link.port}", "FAST_LANE": fast_lane}
    )
    expiring = server.token("r1-viewer", ttl=2)  # the stream ends when it expires
    poller = server.token("r1-poller")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            f"GET /api/events?rooms={ROOM}&access_token={expiring} HTTP/1.1\r\n"
            "Host: test\r\n\r\n".encode()
        )
        status, headers = await read_head(reader)
        assert status == 200 and headers[b"transfer-encoding"] == b"chunked"
        assert b"connection" not in headers  # kept alive
        slow_redis_link.delay(0.5)  # the stream's end-of-stream bookkeeping now takes ~2 s
        assert b"event: stream:open" in await chunks_to_the_end(reader)
        # The response is complete and kept alive: a client reuses the connection at once.
        writer.write(
            f"GET /api/poll?rooms={ROOM}&timeout=0&access_token={poller} HTTP/1.1\r\n"
            "Host: test\r\n\r\n".encode()
        )
        status, headers = await read_head(reader)  # the lane: IncompleteReadError (closed)
        body = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), 30)
        assert status == 200 and "cursor" in json.loads(body)
    finally:
        writer.close()
        server.kill()  # (before the proxy stops: its links then end cleanly)
