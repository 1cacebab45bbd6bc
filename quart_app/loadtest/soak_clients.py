"""One session of a soak client on one transport: connect with a cursor, read for a while,
then drop the connection as a lost network does (no goodbye), and hand back the cursor to
resume from. Raw HTTP/1.1 on asyncio streams with the load generator's wire helpers: a
thousand of these must cost the generator far less than they cost the server."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass

from .soak_check import ClientCheck, scan
from .wire import (
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

TRANSPORTS = ("sse", "ws", "poll")
_POLL_CURSOR = re.compile(rb'"cursor":"([^"]*)"\}\s*$')
_READ = 65536


@dataclass
class Session:
    """Where and how one session connects."""

    target: Target
    address: str
    rooms: list[str]
    token: str | None
    cursor: str
    stay: float  # seconds before the client drops the connection
    poll_pause: float = 1.0  # between two long-polls: a client that does other things too


class SessionEnded(Exception):
    """The server ended the session before the client left (the reason is the message)."""


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _read_head(
    reader: asyncio.StreamReader, deadline: float
) -> tuple[int, bool, dict[str, str], bytes]:
    buffer = b""
    while True:
        split = split_head(buffer)
        if split is not None:
            head, rest = split
            return head.status, head.chunked, head.headers, rest
        data = await asyncio.wait_for(reader.read(_READ), max(0.1, deadline - time.monotonic()))
        if not data:
            raise SessionEnded("closed before answering")
        buffer += data


def _take(check: ClientCheck, raw: bytes, cursor: str) -> str:
    for seen in scan(raw):
        check.take(seen)
        cursor = seen.cursor
    return cursor


async def run_session(transport: str, session: Session, check: ClientCheck) -> str:
    """Run one session; returns the cursor to resume from. Raises SessionEnded (or an
    OSError / TimeoutError) when it ended before its time: the cursor is then `session.cursor`
    as updated so far, which the caller reads back."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(session.address, session.target.port, limit=1 << 20), 30
    )
    try:
        if transport == "sse":
            await _sse(session, check, reader, writer)
        elif transport == "ws":
            await _ws(session, check, reader, writer)
        else:
            await _poll(session, check, reader, writer)
    finally:
        writer.transport.abort()  # a dropped network: no FIN handshake, no Close frame
    return session.cursor


async def _sse(
    session: Session,
    check: ClientCheck,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    headers = {**_auth(session.token), "Accept": "text/event-stream"}
    headers["Last-Event-ID"] = session.cursor
    path = f"/api/events?{'rooms=' + rooms_query(session.rooms)}"
    writer.write(request("GET", session.target, path, headers))
    until = time.monotonic() + session.stay
    status, chunked, _, rest = await _read_head(reader, until + 30)
    if status != 200:
        raise SessionEnded(f"sse {status}")
    scanner = SseScanner(chunked)
    data = rest
    while True:
        if data:
            frames = scanner.feed(data)
            if frames:
                session.cursor = _take(check, frames, session.cursor)
        left = until - time.monotonic()
        if left <= 0:
            return
        try:
            data = await asyncio.wait_for(reader.read(_READ), left)
        except TimeoutError:
            return
        if not data:
            raise SessionEnded("sse ended by the server")


async def _ws(
    session: Session,
    check: ClientCheck,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    key = ws_key()
    headers = {
        **_auth(session.token),
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
    }
    writer.write(request("GET", session.target, "/api/ws", headers))
    until = time.monotonic() + session.stay
    status, _, response_headers, rest = await _read_head(reader, until + 30)
    if status != 101:
        raise SessionEnded(f"ws {status}")
    if response_headers.get("sec-websocket-accept") != ws_accept(key):
        raise WireError("bad Sec-WebSocket-Accept")
    subscribe = {"type": "subscribe", "rooms": session.rooms, "cursor": session.cursor}
    writer.write(ws_frame(1, json.dumps(subscribe).encode()))
    parser = WsParser()
    data = rest
    while True:
        if data:
            frames = parser.feed(data)
            if frames.text:
                if b'"type":"error"' in frames.text:
                    raise SessionEnded("ws error frame")
                session.cursor = _take(check, frames.text, session.cursor)
            for opcode, payload in frames.control:
                if opcode == 9:  # the server's dead-peer ping (PROTOCOL 3.6)
                    writer.write(ws_frame(10, payload))
                elif opcode == 8:
                    raise SessionEnded(f"ws close {ws_close_code(payload)}")
        left = until - time.monotonic()
        if left <= 0:
            return
        try:
            data = await asyncio.wait_for(reader.read(_READ), left)
        except TimeoutError:
            return
        if not data:
            raise SessionEnded("ws ended by the server")


async def _poll(
    session: Session,
    check: ClientCheck,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Long-polls on one keep-alive connection until the stay is over."""
    until = time.monotonic() + session.stay
    responses = ResponseReader()
    while (left := until - time.monotonic()) > 0:
        timeout = max(1, min(10, int(left)))
        path = (
            f"/api/poll?rooms={rooms_query(session.rooms)}&cursor={session.cursor}"
            f"&timeout={timeout}"
        )
        writer.write(request("GET", session.target, path, _auth(session.token)))
        answered: list[tuple[int, bytes]] = []
        while not answered:
            data = await asyncio.wait_for(reader.read(_READ), timeout + 30)
            if not data:
                raise SessionEnded("poll connection closed by the server")
            answered = [(head.status, body) for head, body in responses.feed(data)]
        status, body = answered[0]
        if status != 200:
            raise SessionEnded(f"poll {status}")
        _take(check, body, session.cursor)
        next_cursor = _POLL_CURSOR.search(body)
        if next_cursor is None:
            raise WireError("a poll answer without a cursor")
        session.cursor = next_cursor.group(1).decode()
        pause = min(session.poll_pause, until - time.monotonic())
        if pause > 0:
            await asyncio.sleep(pause)  # the client's own pace between polls, not a wait for X


async def post_json(
    target: Target, address: str, path: str, token: str | None, body: bytes, timeout: float
) -> tuple[int, dict[str, str], bytes]:
    """One POST on a connection of its own: (status, headers, body). Raw like the sessions:
    an HTTP client library per request cost the generator more CPU than the 1,000 streams,
    and a pooled one kept the slots of requests that timed out under load."""
    headers = {**_auth(token), "Content-Type": "application/json", "Connection": "close"}
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(address, target.port)
        try:
            writer.write(request("POST", target, path, headers, body))
            responses = ResponseReader()
            while True:
                data = await reader.read(_READ)
                if not data:
                    raise SessionEnded("closed before answering")
                answered = responses.feed(data)
                if answered:
                    head, content = answered[0]
                    return head.status, head.headers, content
        finally:
            writer.transport.abort()
