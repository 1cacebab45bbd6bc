"""WebSocket: GET /api/ws, as a raw ASGI handler (like sse.py, and for the same reason).

Client frames: subscribe / unsubscribe / ping. Server frames: the same envelopes as SSE and
long-poll, plus subscribed / pong / error. Once the socket is subscribed and caught up, the
hub writes event frames to the socket itself; this task reads client frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import weakref
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..auth import AuthError, Identity
from ..domain.ids import GLOBAL_BOARD
from ..engine.hub import HEARTBEAT, Closed, Connection, Reset
from ..runtime import Runtime
from ..services.errors import ServiceError
from .dead_peers import WebSocketPinger, bound_unacknowledged
from .errors import BadRequestBody, send_problem
from .limits import StreamRefused, StreamSlot, stream_limits
from .raw_socket import WebSocketSink, hypercorn_h11_writer, hypercorn_ws_closing
from .stream_exit import release_stream
from .streams import (
    DEPENDENCY_DOWN,
    authorized_rooms,
    enter_presence,
    open_connection,
    parse_top,
    reset_events,
    scope_headers,
)
from .token_cache import TokenCache
from .tokens import token_from

PATH = "/api/ws"
MAX_FRAME = 64 * 1024
CLOSE_CODES = {
    "slow": (4008, "slow"),
    "expired": (4001, "token expired"),
    "shutdown": (1001, "server shutting down"),
    "drain": (1012, "service restart"),  # PROTOCOL 3.7: resume with your cursor elsewhere
    "unavailable": (1013, "the event log is unavailable; resume later"),  # try again later
}
# Retry-After of a stream refused while this instance drains: another instance can take it.
RETRY_DRAINING_SECONDS = 1
CLOSE_BAD_FRAME, CLOSE_TOO_BIG = 1003, 1009
Scope = dict[str, Any]


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
    """One socket: at most one hub connection, opened by the first subscribe frame."""

    def __init__(
        self, rt: Runtime, identity: Identity, send: Any, scope: Scope, slot: StreamSlot
    ) -> None:
        self.rt = rt
        self.identity = identity
        self.slot = slot  # (its presence, entered with the admission, passes to the connection)
        self.send = send
        self.socket_writer = hypercorn_h11_writer(send, scope)
        self.liveness: object | None = None  # held while open: the pinger watches it
        self.conn: Connection | None = None
        self.top = 100
        self.writer: asyncio.Task[None] | None = None

    def watch_liveness(self) -> None:
        """Once accepted (wsproto's connection exists from then on): pings, and a bound on
        unacknowledged data (PROTOCOL 3.6 dead peers, see dead_peers.py)."""
        if self.socket_writer is not None:
            transport = self.socket_writer.transport
            closing = hypercorn_ws_closing(self.send)
            self.liveness = pinger(self.rt).watch(self.send, transport, closing)
            bound_unacknowledged(transport, self.rt.settings.tcp_user_timeout_seconds)

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.send({"type": "websocket.send", "text": json.dumps(obj)})

    async def send_events(self, batch: list[Any]) -> None:
        for event in batch:
            if event is not HEARTBEAT:
                await self.send({"type": "websocket.send", "text": event.text})

    async def close(self, code: int, reason: str) -> None:
        if self.conn is not None:
            self.conn.close("gone")  # the hub writes no frame after the Close (RFC 6455 5.5.1)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.send({"type": "websocket.close", "code": code, "reason": reason})

    async def next_message(self, receive: Any) -> dict[str, Any] | None:
        """The client's next message; None when its token expires first while no hub
        connection exists yet (the connection ends the socket at expiry from its subscribe
        on; PROTOCOL 3: a WebSocket ends when its token expires, and it is online till then)."""
        expires_at = self.identity.expires_at
        if self.conn is not None or expires_at is None:
            return await receive()  # type: ignore[no-any-return]
        try:
            async with asyncio.timeout(max(0.0, expires_at - time.time())):
                return await receive()  # type: ignore[no-any-return]
        except TimeoutError:
            return None

    def rooms(self) -> list[str]:
        return sorted(self.conn.rooms) if self.conn else []

    async def handle(self, raw: str | bytes | None) -> bool:
        """Act on one client frame; False when the socket must close."""
        if raw is None or len(raw) > MAX_FRAME:
            await self.close(CLOSE_TOO_BIG, "frame too large")
            return False
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            await self.close(CLOSE_BAD_FRAME, "frames must be JSON")
            return False
        try:
            frame = ClientFrame.model_validate(payload)
            if frame.type == "ping":
                await self.send_json({"type": "pong"})
            elif frame.type == "subscribe":
                await self.subscribe(frame)
            elif frame.type == "unsubscribe":
                if self.conn is not None:
                    self.rt.hub.leave(self.conn, frame.rooms)
                await self.send_json({"type": "subscribed", "rooms": self.rooms()})
            else:
                raise BadRequestBody(400, "Bad Request", f"unknown frame type {frame.type!r}")
        except ValidationError:
            await self.send_json(
                {"type": "error", "status": 422, "title": "the frame does not match the schema"}
            )
        except (BadRequestBody, ServiceError) as exc:
            await self.send_json({"type": "error", "status": exc.status, "title": exc.detail})
        except DEPENDENCY_DOWN:  # the board unreadable for a later subscribe: the socket stays
            await self.send_json(
                {"type": "error", "status": 503, "title": "a dependency is unavailable; retry"}
            )
        except Closed:
            # The log was unreadable while catching up (Redis gone): 1013 Try Again Later;
            # the client resumes with its cursor.
            await self.close(*CLOSE_CODES["unavailable"])
            return False
        return True

    async def subscribe(self, frame: ClientFrame) -> None:
        rooms = authorized_rooms(self.identity, frame.rooms)
        if frame.top is not None:
            self.top = parse_top(frame.top)
        if self.conn is not None:
            added = self.rt.hub.join(self.conn, rooms)
            await self.send_json({"type": "subscribed", "rooms": self.rooms()})
            if GLOBAL_BOARD in added:
                self.conn.push(await self.rt.hub.snapshot(self.top))
            await self.rt.hub.windows.push_current(self.conn, added)
            return
        # The first subscribe may resume from a cursor; later ones join from now on.
        conn, _, initial = await open_connection(
            self.rt, self.identity, rooms, frame.cursor, self.top
        )
        self.conn = conn
        conn.writer = asyncio.current_task()
        if conn.closed:  # born closed (draining began meanwhile): ends as a drained socket
            raise asyncio.CancelledError
        await self.send_json({"type": "subscribed", "rooms": self.rooms()})
        await self.send_events(initial)
        await enter_presence(self.rt, conn, self.slot)
        while conn.catching_up:
            try:
                await self.send_events(await conn.catch_up_step())
            except Reset as reset:
                await self.send_events(await reset_events(self.rt, conn, reset.reason, self.top))
        if conn.closed:  # ended meanwhile (its token expired): close with its code now
            raise asyncio.CancelledError
        writer = self.socket_writer
        if writer is not None:
            closing = hypercorn_ws_closing(self.send)
            conn.attach(WebSocketSink(writer.transport, writer, closing))
        else:
            self.writer = asyncio.create_task(self._write(conn))

    async def _write(self, conn: Connection) -> None:
        """Without a raw socket: this task writes the events."""
        while True:
            try:
                batch = await conn.next_batch()
            except Reset as reset:
                batch = await reset_events(self.rt, conn, reset.reason, self.top)
            except Closed:
                if conn.writer is not None:
                    conn.writer.cancel()  # the reader: it closes the socket
                return
            await self.send_events(batch)


class WebSocketEndpoint:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        # A reconnect storm's tokens were mostly verified before (as for SSE, sse.py).
        self.tokens = TokenCache(runtime.auth.verify)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        first = await receive()
        if first["type"] not in ("websocket.connect", "websocket.receive"):
            return
        if self.rt.draining:  # PROTOCOL 3.7: new streams go to another instance
            await StreamRefused(
                503, RETRY_DRAINING_SECONDS, "this instance is shutting down; retry"
            ).send(send, "websocket.http")
            return
        # Quart's test client skips websocket.connect and sends the first frame at once.
        pending = first if first["type"] == "websocket.receive" else None
        headers = scope_headers(scope)
        if not origin_allowed(
            headers.get("origin"), self.rt.settings.cors_origin_list, headers.get("host")
        ):
            await send_problem(
                send, "websocket.http", 403, "Forbidden", "this Origin may not open a WebSocket"
            )
            return
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
        try:
            token = token_from(
                headers.get("authorization"),
                query.get("access_token"),
                headers.get("cookie"),
                allow_query=True,
            )
            identity = self.tokens.verify(token) if token else self.rt.auth.identify(None)
        except AuthError as exc:
            await send_problem(send, "websocket.http", 401, "Unauthorized", str(exc))
            return
        except ServiceError as exc:  # the identity provider's keys not loaded yet: 503
            await send_problem(send, "websocket.http", exc.status, exc.title, exc.detail)
            return
        try:  # PROTOCOL 3.6: over a connection limit, refused before the upgrade
            # An open WebSocket counts its player online (`/api/presence`), entered in the
            # admission's round trip.
            slot = await stream_limits(self.rt).admit(identity, scope, enter_presence=True)
        except StreamRefused as refused:
            await refused.send(send, "websocket.http")
            return
        session = Session(self.rt, identity, send, scope, slot)
        try:
            await slot.enter_presence(identity.sub)  # (if the admission did not: limit off)
            await send({"type": "websocket.accept"})
            session.watch_liveness()
            await self._read(receive, session, pending)
        except asyncio.CancelledError:
            conn = session.conn
            if conn is None or not conn.closed:  # not the hub ending it: the server is
                raise
            await session.close(*CLOSE_CODES.get(conn.closed, (1000, "")))
        finally:
            if session.writer is not None:
                session.writer.cancel()
            if session.conn is not None:
                session.conn.close("gone")
            await release_stream(self.rt, slot, session.conn)

    @staticmethod
    async def _read(receive: Any, session: Session, pending: dict[str, Any] | None) -> None:
        while True:
            message, pending = pending or await session.next_message(receive), None
            if message is None:  # its token expired before it subscribed
                await session.close(*CLOSE_CODES["expired"])
                return
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes")
            if not await session.handle(raw):
                return


_pingers: weakref.WeakKeyDictionary[Runtime, WebSocketPinger] = weakref.WeakKeyDictionary()


def pinger(rt: Runtime) -> WebSocketPinger:
    """The instance's WebSocket pinger, ticking with its hub."""
    found = _pingers.get(rt)
    if found is None:
        settings = rt.settings
        found = _pingers[rt] = WebSocketPinger(
            settings.ws_ping_seconds, settings.ws_ping_timeout_seconds
        )
        rt.hub.tickers.append(found.tick)
    return found
