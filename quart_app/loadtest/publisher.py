"""The publisher: POST /api/publish over keep-alive connections, pipelined.

Publisher connection p sends the events with n % P == p, in increasing n, with up to
`window` requests in flight. HTTP/1.1 answers requests of one connection in order and the
server handles them one after the other, so the log holds each connection's events in n
order: that is what lets every subscriber check order exactly. Each event carries its
publish time (time.time_ns() just before the request is written).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import cast

from .wire import ResponseReader, Target, WireError, marker_data, request


@dataclass(slots=True)
class PublishResult:
    attempted: int = 0
    accepted: int = 0
    failed: set[int] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None
    first_ns: int = 0  # time.time_ns() of the first request written
    last_ns: int = 0  # time of the last request written
    done_ns: int = 0  # time the last answer arrived
    latencies_ns: list[int] = field(default_factory=list)  # request-to-answer, per event


class _Connection(asyncio.Protocol):
    def __init__(self, window: int, result: PublishResult) -> None:
        self.window = window
        self.result = result
        self.reader = ResponseReader()
        self.in_flight: deque[tuple[int, int]] = deque()  # (n, sent_ns)
        self.transport: asyncio.Transport | None = None
        self.room_for_more = asyncio.Event()
        self.room_for_more.set()
        self.drained = asyncio.Event()
        self.drained.set()
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("publisher connection closed by the server")
        for n, _ in self.in_flight:
            self.result.failed.add(n)
            self.result.statuses["lost"] += 1
        self.in_flight.clear()
        self.room_for_more.set()
        self.drained.set()

    def data_received(self, data: bytes) -> None:
        try:
            answers = self.reader.feed(data)
        except WireError as exc:
            self.lost = exc
            assert self.transport is not None
            self.transport.close()
            return
        now = time.time_ns()
        result = self.result
        for head, body in answers:
            n, sent = self.in_flight.popleft()
            result.statuses[str(head.status)] += 1
            if head.status == 202:
                result.accepted += 1
                result.latencies_ns.append(now - sent)
            else:
                result.failed.add(n)
                if result.first_error is None:
                    result.first_error = f"HTTP {head.status}: {body[:300]!r}"
        result.done_ns = now
        if len(self.in_flight) < self.window:
            self.room_for_more.set()
        if not self.in_flight:
            self.drained.set()

    async def send(self, payload_for: tuple[Target, str, str, str], n: int) -> None:
        while len(self.in_flight) >= self.window and self.lost is None:
            self.room_for_more.clear()
            await self.room_for_more.wait()
        if self.lost is not None:
            self.result.failed.add(n)
            self.result.statuses["lost"] += 1
            return
        target, token, room, run = payload_for
        now = time.time_ns()
        body = json.dumps(
            {"room": room, "event": "announcement", "data": marker_data(now, n, run)},
            separators=(",", ":"),
        ).encode()
        assert self.transport is not None
        self.transport.write(
            request(
                "POST",
                target,
                "/api/publish",
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                body,
            )
        )
        self.in_flight.append((n, now))
        self.drained.clear()
        result = self.result
        result.attempted += 1
        if not result.first_ns:
            result.first_ns = now
        result.last_ns = now


async def publish(
    target: Target,
    address: str,
    token: str,
    room: str,
    run: str,
    *,
    events: int,
    rate: float | None,
    publishers: int = 1,
    window: int = 64,
    deadline: float | None = None,
) -> PublishResult:
    """Publish events n = 0..events-1: as fast as the window allows (`rate` None) or on a
    schedule of `rate` per second. Stops early at `deadline` (time.monotonic())."""
    loop = asyncio.get_running_loop()
    result = PublishResult()
    connections: list[_Connection] = []
    for _ in range(publishers):
        connection = _Connection(window, result)
        await loop.create_connection(lambda c=connection: c, address, target.port)  # type: ignore[misc]
        connections.append(connection)
    payload = (target, token, room, run)
    start = time.monotonic()
    try:
        for n in range(events):
            if rate is not None:
                due = start + n / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if deadline is not None and time.monotonic() > deadline:
                break
            await connections[n % publishers].send(payload, n)
        for connection in connections:
            await connection.drained.wait()
    finally:
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
    return result
