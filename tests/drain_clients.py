"""Lean raw-socket clients for the drain tests (PROTOCOL 3.7): thousands of them in the test
process, each following one room on one transport, recording what a user would notice: every
announcement number it got (in order), how its stream on the draining instance ended (SSE:
the last `retry:` hint, and whether a stream:reset came; WebSocket: the close code; long-poll:
how fast a pending poll was answered) and when, and its cursor to resume with elsewhere.

Built on the load generator's wire helpers (asyncio streams, no HTTP library per client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass, field

from quart_app.loadtest.wire import (
    ResponseReader,
    SseScanner,
    Target,
    WsParser,
    request,
    split_head,
    ws_accept,
    ws_close_code,
    ws_frame,
    ws_key,
)

ROOM = "matches"
_ANNOUNCED = re.compile(rb'"event":"announcement","data":\{"n":(\d+)\}')
_CURSOR = re.compile(rb'\{"id":"([^"]*)","rooms"')
_RETRY = re.compile(rb"(?:^|\n)retry: (\d+)\n")
_POLL_CURSOR = re.compile(rb'"cursor":"([^"]*)"\}\s*$')
_READ = 65536


@dataclass
class Ending:
    """How the server ended one stream."""

    at: float  # time.monotonic()
    kind: str  # "sse-eof", "ws-close", "poll-answer", "refused", "reset"
    retry_ms: int | None = None  # SSE: the last retry hint
    close_code: int | None = None  # WebSocket
    reset: bool = False  # SSE: a stream:reset came before the end


@dataclass
class Follower:
    """One client: its transport, what it got, where it stands."""

    transport: str
    token: str
    cursor: str
    got: list[int] = field(default_factory=list)
    endings: list[Ending] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def _take(self, raw: bytes) -> None:
        self.got.extend(int(n) for n in _ANNOUNCED.findall(raw))
        cursors = _CURSOR.findall(raw)
        if cursors:
            self.cursor = cursors[-1].decode()

    async def session(self, port: int, until: asyncio.Event) -> Ending:
        """Follow the room on the instance at `port` until that instance ends the stream
        (returns how) or `until` is set (returns kind "left")."""
        # asyncio.timeout, not wait_for: on Python 3.11 a wait_for cancelled as its connect
        # completes drops the connection unclosed (a ResourceWarning failed a CI run); here
        # the cancellation reaches open_connection itself, which closes what it opened.
        async with asyncio.timeout(30):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            run = {"sse": self._sse, "ws": self._ws, "poll": self._poll}[self.transport]
            reading = asyncio.ensure_future(run(port, reader, writer))
            leaving = asyncio.ensure_future(until.wait())
            await asyncio.wait([reading, leaving], return_when=asyncio.FIRST_COMPLETED)
            if reading.done():
                leaving.cancel()
                ending = reading.result()
                self.endings.append(ending)
                return ending
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            return Ending(time.monotonic(), "left")
        finally:
            writer.transport.abort()
            # The socket closes in a later turn of the loop: waited for, so that a test
            # ending right after does not leave it to the garbage collector unclosed.
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def _head(self, reader: asyncio.StreamReader) -> tuple[int, bool, dict[str, str], bytes]:
        buffer = b""
        while True:
            split = split_head(buffer)
            if split is not None:
                head, rest = split
                return head.status, head.chunked, head.headers, rest
            data = await reader.read(_READ)
            if not data:
                raise ConnectionError("closed before answering")
            buffer += data

    async def _sse(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Ending:
        headers = {**self._auth(), "Last-Event-ID": self.cursor}
        writer.write(
            request(
                "GET", Target("http", "127.0.0.1", port, ""), f"/api/events?rooms={ROOM}", headers
            )
        )
        status, chunked, _, data = await self._head(reader)
        if status != 200:
            return Ending(time.monotonic(), "refused")
        self.opened.set()
        scanner, retry, reset = SseScanner(chunked), None, False
        while True:
            frames = scanner.feed(data) if data else b""
            if frames:
                self._take(frames)
                reset = reset or b"event: stream:reset" in frames
                hints = _RETRY.findall(frames)
                if hints:
                    retry = int(hints[-1])
            if chunked and scanner.pending == b"\r\n0\r\n\r\n":  # the last chunk: the end
                return Ending(time.monotonic(), "sse-eof", retry_ms=retry, reset=reset)
            data = await reader.read(_READ)
            if not data:
                return Ending(time.monotonic(), "sse-eof", retry_ms=retry, reset=reset)

    async def _ws(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Ending:
        key = ws_key()
        headers = {
            **self._auth(),
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
        }
        writer.write(request("GET", Target("http", "127.0.0.1", port, ""), "/api/ws", headers))
        status, _, response_headers, data = await self._head(reader)
        if status != 101:
            return Ending(time.monotonic(), "refused")
        assert response_headers.get("sec-websocket-accept") == ws_accept(key)
        subscribe = {"type": "subscribe", "rooms": [ROOM], "cursor": self.cursor}
        writer.write(ws_frame(1, json.dumps(subscribe).encode(), mask=b"abcd"))
        parser = WsParser()
        while True:
            if data:
                frames = parser.feed(data)
                if frames.text:
                    if b'"subscribed"' in frames.text:
                        self.opened.set()
                    self._take(frames.text)
                for opcode, payload in frames.control:
                    if opcode == 9:
                        writer.write(ws_frame(10, payload, mask=b"abcd"))
                    elif opcode == 8:
                        return Ending(
                            time.monotonic(), "ws-close", close_code=ws_close_code(payload)
                        )
            data = await reader.read(_READ)
            if not data:
                return Ending(time.monotonic(), "ws-close", close_code=1006)

    async def _poll(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Ending:
        """Polls (timeout 20 s) until an answer comes back without a cursor move and no
        events while the poll was short: then the instance is draining (answered at once)."""
        target = Target("http", "127.0.0.1", port, "")
        responses = ResponseReader()
        while True:
            path = f"/api/poll?rooms={ROOM}&cursor={self.cursor}&timeout=20"
            writer.write(request("GET", target, path, self._auth()))
            self.opened.set()
            asked = time.monotonic()
            answered: list[tuple[int, bytes]] = []
            while not answered:
                data = await reader.read(_READ)
                if not data:
                    return Ending(time.monotonic(), "poll-closed")
                answered = [(head.status, body) for head, body in responses.feed(data)]
            status, body = answered[0]
            if status != 200:
                return Ending(time.monotonic(), f"refused {status} {body[:200]!r}")
            self._take(body)
            moved = _POLL_CURSOR.search(body)
            assert moved is not None, body[-200:]
            self.cursor = moved.group(1).decode()
            if not _ANNOUNCED.search(body) and time.monotonic() - asked < 15:
                # Empty long before its timeout: a drain answer (events keep flowing in
                # these tests, so a live instance answers with events instead).
                return Ending(time.monotonic(), "poll-answer")
