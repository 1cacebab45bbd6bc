"""The subscribers: lean asyncio Protocols (uvloop), one per connection.

Each parses its response head once, then works on whole reads: SSE and WebSocket find this
run's events with one regex over the run of complete frames (a C scan), take one clock
reading per read, and hand the sequence numbers to the client's Tracker. Latency is kept
for a sample: the events whose n is a multiple of `sample_every` (the same events on every
client, so the fan-out's spread across clients is in the sample); the maximum is exact.
"""

from __future__ import annotations

import asyncio
import errno
import json
import re
import socket
import time
from typing import Any, cast

from .tracker import Tracker
from .wire import (
    Head,
    ResponseReader,
    SseScanner,
    Target,
    WireError,
    WsParser,
    request,
    rooms_query,
    split_head,
    ws_accept,
    ws_close_code,
    ws_frame,
    ws_key,
)

_RESET_REASON = re.compile(rb'"event":\s*"stream:reset".*?"reason":\s*"([^"]*)"')
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class Sink:
    """What the clients of one transport in one worker share: the latency sample."""

    __slots__ = ("every", "samples")

    def __init__(self, every: int) -> None:
        self.every = max(1, every)
        self.samples: list[int] = []  # publish-to-receive, nanoseconds


class Plan:
    """What every client needs to know about the run (shared, read-only)."""

    __slots__ = (
        "target",
        "address",
        "room",
        "token",
        "pattern",
        "publishers",
        "top",
        "poll_timeout",
        "run",
    )

    def __init__(
        self,
        target: Target,
        address: str,
        room: str,
        token: str | None,
        pattern: re.Pattern[bytes],
        publishers: int,
        top: int | None,
        poll_timeout: int,
        run: str,
    ) -> None:
        self.target = target
        self.address = address
        self.room = room
        self.token = token
        self.pattern = pattern
        self.publishers = publishers
        self.top = top
        self.poll_timeout = poll_timeout
        self.run = run

    def headers(self, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def query(self) -> str:
        query = f"rooms={rooms_query([self.room])}"
        if self.top is not None:
            query += f"&top={self.top}"
        return query


class Client(asyncio.Protocol):
    kind = "?"

    def __init__(self, plan: Plan, sink: Sink) -> None:
        self.plan = plan
        self.sink = sink
        self.tracker = Tracker(plan.publishers)
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.started = 0.0
        self.ready_at = 0.0
        self.open = False
        self.closing = False  # we are closing it: not a disconnect
        self.ended: str | None = None  # why the server or the network ended it
        self.resets: list[str] = []
        self._head = b""
        self.other = 0  # announcement frames that are not this run's
        self.protocol_errors = 0

    # lifecycle ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.open = True
        self.opened()

    def opened(self) -> None:
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.ready.done():
            reason = f"closed before ready: {exc}" if exc else "closed before ready"
            self.ready.set_exception(ConnectionError(reason))
        elif not self.closing and self.ended is None:
            self.ended = f"network: {type(exc).__name__}" if exc else "closed by server"

    def read_head(self, data: bytes, status: int) -> tuple[Any, bytes] | None:
        """Gather the response head; once whole, the head and the bytes after it. None while
        incomplete, or after failing the client (a bad head or another status)."""
        self._head += data
        try:
            split = split_head(self._head)
        except WireError as exc:
            self.fail(str(exc))
            return None
        if split is None:
            return None
        head, rest = split
        self._head = b""
        if head.status != status:
            self.fail(f"HTTP {head.status}")
            return None
        return head, rest

    def fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        elif self.ended is None:
            self.ended = reason
        self.close()

    def close(self) -> None:
        self.closing = self.closing or self.ended is None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def set_ready(self) -> None:
        if not self.ready.done():
            self.ready_at = time.monotonic()
            self.ready.set_result(None)

    # delivery ------------------------------------------------------------------------------
    def deliver(self, matches: list[tuple[Any, Any]], now: int) -> None:
        numbers = [int(n) for _, n in matches]
        tracker = self.tracker
        tracker.feed(numbers)
        if self.plan.publishers == 1:
            oldest = int(matches[0][0])
        else:
            oldest = min(int(t) for t, _ in matches)
        if now - oldest > tracker.max_latency_ns:
            tracker.max_latency_ns = now - oldest
        if not tracker.first_ns:
            tracker.first_ns = now
        tracker.last_ns = now
        every = self.sink.every
        if every == 1:
            self.sink.samples.extend([now - int(t) for t, _ in matches])
        elif numbers[-1] - numbers[0] == len(numbers) - 1:
            start = (-numbers[0]) % every
            self.sink.samples.extend([now - int(t) for t, _ in matches[start::every]])
        else:
            self.sink.samples.extend(
                [now - int(t) for (t, _), n in zip(matches, numbers, strict=True) if n % every == 0]
            )


class SseClient(Client):
    """GET /api/events: a stream of `id/event/data` frames."""

    kind = "sse"

    def __init__(self, plan: Plan, sink: Sink) -> None:
        super().__init__(plan, sink)
        self._scanner: SseScanner | None = None

    def opened(self) -> None:
        assert self.transport is not None
        self.transport.write(
            request(
                "GET",
                self.plan.target,
                f"/api/events?{self.plan.query()}",
                self.plan.headers(Accept="text/event-stream", **{"Cache-Control": "no-cache"}),
            )
        )

    def data_received(self, data: bytes) -> None:
        scanner = self._scanner
        if scanner is None:
            got = self.read_head(data, 200)
            if got is None:
                return
            head, data = got
            if not head.headers.get("content-type", "").startswith("text/event-stream"):
                self.fail(f"content-type {head.headers.get('content-type')!r}")
                return
            scanner = self._scanner = SseScanner(head.chunked)
            if not data:
                return
        frames = scanner.feed(data)
        if not frames:
            return
        now = time.time_ns()
        if not self.ready.done() and b"\nevent: stream:open\n" in frames:
            self.set_ready()
        matches = self.plan.pattern.findall(frames)
        if matches:
            self.deliver(matches, now)
        announcements = frames.count(b"\nevent: announcement\n")
        if announcements != len(matches):
            self.other += announcements - len(matches)
        if b"\nevent: stream:reset\n" in frames:
            found = _RESET_REASON.search(frames)
            self.resets.append(found.group(1).decode() if found else "?")
        if scanner.stray_cr:
            self.protocol_errors += scanner.stray_cr
            scanner.stray_cr = 0


class PollClient(Client):
    """GET /api/poll in a loop on one keep-alive connection, handing back the cursor."""

    kind = "poll"

    def __init__(self, plan: Plan, sink: Sink) -> None:
        super().__init__(plan, sink)
        self._reader = ResponseReader()
        self.cursor: str | None = None
        self.polls = 0

    def opened(self) -> None:
        self._poll()

    def _poll(self) -> None:
        assert self.transport is not None
        path = f"/api/poll?{self.plan.query()}"
        if self.cursor is not None:
            path += f"&cursor={self.cursor}&timeout={self.plan.poll_timeout}"
        self.polls += 1
        self.transport.write(request("GET", self.plan.target, path, self.plan.headers()))

    def data_received(self, data: bytes) -> None:
        try:
            answers = self._reader.feed(data)
        except WireError as exc:
            self.fail(str(exc))
            return
        for head, body in answers:
            now = time.time_ns()
            if not self._answer(head, body, now):
                return
            if self.closing or self.transport is None or self.transport.is_closing():
                return
            self._poll()

    def _answer(self, head: Head, body: bytes, now: int) -> bool:
        if head.status != 200:
            self.fail(f"HTTP {head.status}")
            return False
        try:
            answer = json.loads(body)
            events = answer["events"]
            cursor = answer["cursor"]
        except (ValueError, KeyError, TypeError):
            self.fail("poll answer is not {events, cursor}")
            return False
        matches: list[tuple[Any, Any]] = []
        run = self.plan.run
        for envelope in events:
            name = envelope.get("event")
            if name == "announcement":
                data = envelope.get("data")
                if isinstance(data, dict) and data.get("r") == run:
                    matches.append((data["t"], data["n"]))
                else:
                    self.other += 1
            elif name == "stream:reset":
                self.resets.append(str((envelope.get("data") or {}).get("reason", "?")))
        self.cursor = str(cursor)
        if not self.ready.done():
            self.set_ready()
        if matches:
            self.deliver(matches, now)
        return True


class WsClient(Client):
    """GET /api/ws (upgrade), then one subscribe frame; every server text frame is an
    envelope or a control message."""

    kind = "ws"

    def __init__(self, plan: Plan, sink: Sink) -> None:
        super().__init__(plan, sink)
        self._key = ws_key()
        self._parser: WsParser | None = None
        self.close_code: int | None = None

    def opened(self) -> None:
        assert self.transport is not None
        self.transport.write(
            request(
                "GET",
                self.plan.target,
                "/api/ws",
                self.plan.headers(
                    Upgrade="websocket",
                    Connection="Upgrade",
                    **{"Sec-WebSocket-Key": self._key, "Sec-WebSocket-Version": "13"},
                ),
            )
        )

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            got = self.read_head(data, 101)
            if got is None:
                return
            head, data = got
            if head.headers.get("sec-websocket-accept") != ws_accept(self._key):
                self.fail("bad Sec-WebSocket-Accept")
                return
            parser = self._parser = WsParser()
            subscribe: dict[str, Any] = {"type": "subscribe", "rooms": [self.plan.room]}
            if self.plan.top is not None:
                subscribe["top"] = self.plan.top
            assert self.transport is not None
            self.transport.write(ws_frame(1, json.dumps(subscribe).encode()))
            if not data:
                return
        try:
            frames = parser.feed(data)
        except WireError as exc:
            self.protocol_errors += 1
            self.fail(str(exc))
            return
        for opcode, payload in frames.control:
            self._control(opcode, payload)
        if not frames.messages:
            return
        now = time.time_ns()
        text = frames.text
        if not self.ready.done():
            if b'"subscribed"' in text:
                self.set_ready()
            elif b'"error"' in text:
                self.fail(f"subscribe refused: {text[-200:]!r}")
                return
        matches = self.plan.pattern.findall(text)
        if matches:
            self.deliver(matches, now)
        announcements = text.count(b'"event":"announcement"') + text.count(
            b'"event": "announcement"'
        )
        if announcements != len(matches):
            self.other += announcements - len(matches)
        if b"stream:reset" in text:
            found = _RESET_REASON.search(text)
            self.resets.append(found.group(1).decode() if found else "?")

    def _control(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 9:  # ping
            self.transport.write(ws_frame(10, payload))
        elif opcode == 8:  # close
            self.close_code = ws_close_code(payload)
            if not self.closing and self.ended is None:
                self.ended = f"ws close {self.close_code}"
            if not self.transport.is_closing():
                self.transport.write(ws_frame(8, payload[:2]))
                self.transport.close()

    def close(self) -> None:
        self.closing = self.closing or self.ended is None
        if self.transport is not None and not self.transport.is_closing():
            if self._parser is not None:
                self.transport.write(ws_frame(8, (1000).to_bytes(2, "big")))
            self.transport.close()


KINDS: dict[str, type[Client]] = {"sse": SseClient, "poll": PollClient, "ws": WsClient}


async def connect(client: Client, source_ip: str | None) -> None:
    """Open the client's connection, from `source_ip` when given (each source address has
    its own ~28k ephemeral ports toward one destination)."""
    loop = asyncio.get_running_loop()
    plan = client.plan
    if source_ip is None:
        await loop.create_connection(lambda: client, plan.address, plan.target.port)
        return
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Defer the port choice to connect(): then a port is only unique per 4-tuple.
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.setblocking(False)
        sock.bind((source_ip, 0))
        await loop.sock_connect(sock, (plan.address, plan.target.port))
    except BaseException:
        sock.close()
        raise
    await loop.create_connection(lambda: client, sock=sock)


def error_name(exc: BaseException) -> str:
    """A short, countable name for a connect failure."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    text = str(exc)
    return text[:60] if text else type(exc).__name__
