"""WebSocket: GET /api/ws. Client frames subscribe/unsubscribe/ping; server frames are the
same envelopes as SSE and long-poll, plus subscribed/pong/error."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from quart import Blueprint, Response, websocket
from quart_schema import hide

from ..auth import Identity
from ..domain.ids import GLOBAL_BOARD
from ..engine.hub import HEARTBEAT, Closed, Connection, Reset
from ..runtime import Runtime, runtime
from ..services.errors import ServiceError
from .errors import BadRequestBody, problem
from .requests import identify
from .streams import (
    authorized_rooms,
    enter_presence,
    leave_presence,
    open_connection,
    parse_top,
    reset_events,
)

ws = Blueprint("ws", __name__)

MAX_FRAME = 64 * 1024
CLOSE_TOO_BIG, CLOSE_SLOW, CLOSE_EXPIRED, CLOSE_BAD_FRAME = 1009, 4008, 4001, 1003


class ClientFrame(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    rooms: list[str] = Field(default_factory=list, max_length=100)
    cursor: str | None = None
    top: int | None = None


def origin_allowed(origin: str | None, allowed: list[str] | None, host: str | None) -> bool:
    """PROTOCOL 3.3: CORS_ORIGINS ('*' = any); unset: same origin, or no Origin at all."""
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if allowed is not None:
        return "*" in allowed or origin in allowed
    return urlsplit(origin).netloc == host


class Session:
    """One socket: at most one hub connection, created by the first subscribe frame."""

    def __init__(self, rt: Runtime, identity: Identity) -> None:
        self.rt = rt
        self.identity = identity
        self.conn: Connection | None = None
        self.top = 100
        self.subscribed = asyncio.Event()

    async def send_json(self, obj: dict[str, Any]) -> None:
        await websocket.send(json.dumps(obj))

    async def error(self, status: int, title: str) -> None:
        await self.send_json({"type": "error", "status": status, "title": title})

    async def handle(self, frame: ClientFrame) -> None:
        if frame.type == "ping":
            await self.send_json({"type": "pong"})
        elif frame.type == "subscribe":
            await self.subscribe(frame)
        elif frame.type == "unsubscribe":
            if self.conn is not None:
                self.rt.hub.leave(self.conn, frame.rooms)
            await self.send_json({"type": "subscribed", "rooms": self.rooms()})
        else:
            await self.error(400, f"unknown frame type {frame.type!r}")

    def rooms(self) -> list[str]:
        return sorted(self.conn.rooms) if self.conn else []

    async def subscribe(self, frame: ClientFrame) -> None:
        rooms = authorized_rooms(self.identity, frame.rooms)
        if frame.top is not None:
            self.top = parse_top(frame.top)
        if self.conn is None:
            # The first subscribe may resume from a cursor; later ones join from now on.
            self.conn, _, initial = await open_connection(
                self.rt, self.identity, rooms, frame.cursor, self.top)
            await self.send_json({"type": "subscribed", "rooms": self.rooms()})
            for event in initial:
                self.conn.enqueue(event)
            await enter_presence(self.rt, self.conn)
            self.subscribed.set()
            return
        added = self.rt.hub.join(self.conn, rooms)
        await self.send_json({"type": "subscribed", "rooms": self.rooms()})
        if GLOBAL_BOARD in added:
            self.conn.enqueue(await self.rt.hub.snapshot(self.top))

    async def read(self) -> None:
        while True:
            raw = await websocket.receive()
            if len(raw) > MAX_FRAME:
                await websocket.close(CLOSE_TOO_BIG, "frame too large")
                return
            try:
                payload = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                await websocket.close(CLOSE_BAD_FRAME, "frames must be JSON")
                return
            try:
                frame = ClientFrame.model_validate(payload)
            except ValidationError:
                await self.error(422, "the frame does not match the schema")
                continue
            try:
                await self.handle(frame)
            except (BadRequestBody, ServiceError) as exc:
                await self.error(exc.status, exc.detail)

    async def write(self) -> None:
        await self.subscribed.wait()
        conn = self.conn
        assert conn is not None
        conn.writer = asyncio.current_task()
        while True:
            try:
                batch = await conn.next_batch()
            except Reset as reset:
                batch = await reset_events(self.rt, conn, reset.reason, self.top)
            except Closed as closed:
                if closed.reason == "slow":
                    await websocket.close(CLOSE_SLOW, "slow")
                elif closed.reason == "expired":
                    await websocket.close(CLOSE_EXPIRED, "token expired")
                return
            for event in batch:
                if event is not HEARTBEAT:
                    await websocket.send(event.text)


@ws.websocket("/api/ws")
@hide
async def socket() -> Response | None:
    rt = runtime()
    if not origin_allowed(websocket.headers.get("Origin"), rt.settings.cors_origin_list,
                          websocket.headers.get("Host")):
        return problem(403, "Forbidden", "this Origin may not open a WebSocket")
    identity = identify(allow_query=True)
    await websocket.accept()
    session = Session(rt, identity)
    reader = asyncio.create_task(session.read())
    writer = asyncio.create_task(session.write())
    try:
        await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reader, writer):
            task.cancel()
        for task in (reader, writer):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if session.conn is not None:
            if session.conn.closed == "slow":
                # The writer was cancelled while stuck on a full socket.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(websocket.close(CLOSE_SLOW, "slow"), 1.0)
            session.conn.close("gone")
            await leave_presence(rt, session.conn)
    return None
