"""Server-Sent Events: GET /api/events, as a raw ASGI handler.

Quart's streaming response costs a task, a timeout and generator frames per connection
(about 10 KB more per idle stream, measured); this handler writes each wake-up's batch of
pre-encoded frames straight to the server as one chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from ..auth import AuthError
from ..engine.hub import HEARTBEAT, Closed, Connection, Reset
from ..runtime import Runtime
from ..services.errors import ServiceError
from .errors import BadRequestBody
from .streams import authorized_rooms, enter_presence, leave_presence, open_connection, parse_top, reset_events

log = logging.getLogger(__name__)

PATH = "/api/events"
PING = b": ping\n\n"
Scope = dict[str, Any]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


async def _problem(send: Any, status: int, title: str, detail: str,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    headers = [(b"content-type", b"application/problem+json"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})


def _frames(batch: list[Any]) -> bytes:
    return b"".join(PING if event is HEARTBEAT else event.sse for event in batch)


class EventStream:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await _problem(send, 405, "Method Not Allowed", "use GET", [(b"allow", b"GET")])
            return
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
        try:
            token = self._token(scope, query)
            identity = self.rt.auth.identify(token)
            rooms = authorized_rooms(identity, query.get("rooms"))
            if not rooms:
                raise BadRequestBody(400, "Bad Request", "name at least one room: ?rooms=a,b")
            top = parse_top(query.get("top"))
        except AuthError as exc:
            await _problem(send, 401, "Unauthorized", str(exc), [(b"www-authenticate", b"Bearer")])
            return
        except (BadRequestBody, ServiceError) as exc:
            await _problem(send, exc.status, exc.title, exc.detail)
            return
        cursor = _header(scope, b"last-event-id") or query.get("last_event_id")
        await self._stream(send, receive, identity, rooms, cursor, top)

    def _token(self, scope: Scope, query: dict[str, str]) -> str | None:
        header = _header(scope, b"authorization") or ""
        kind, _, token = header.partition(" ")
        if kind.lower() == "bearer" and token.strip():
            return token.strip()
        if header:
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        return query.get("access_token") or _cookie(scope, "access_token")

    async def _stream(self, send: Any, receive: Any, identity: Any, rooms: list[str],
                      cursor: str | None, top: int) -> None:
        rt = self.rt
        conn, start, initial = await open_connection(rt, identity, rooms, cursor, top)
        conn.writer = asyncio.current_task()
        watcher = asyncio.get_running_loop().create_task(self._watch_disconnect(receive, conn))
        try:
            try:
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ]})
                opened = rt.hub.stream_event("stream:open", {
                    "connection_id": conn.id, "rooms": sorted(conn.rooms), "cursor": start})
                retry = f"retry: {rt.settings.sse_retry_ms}\n\n".encode()
                await send({"type": "http.response.body", "more_body": True,
                            "body": retry + _frames([opened, *initial])})
                await enter_presence(rt, conn)
                await self._pump(send, conn, top)
            except asyncio.CancelledError:
                if conn.closed != "slow":  # cancelled while stuck on a full socket: slow
                    raise
            if conn.closed == "slow":
                # Lands after what the socket already holds; the client resumes with its cursor.
                hint = rt.hub.stream_event("stream:reset", {"reason": "slow"})
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(send(
                        {"type": "http.response.body", "body": hint.sse, "more_body": True}), 1.0)
        finally:
            watcher.cancel()
            conn.close("gone")
            await leave_presence(rt, conn)
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, send: Any, conn: Connection, top: int) -> None:
        while True:
            try:
                batch = await conn.next_batch()
            except Reset as reset:
                batch = await reset_events(self.rt, conn, reset.reason, top)
            except Closed:
                return
            await send({"type": "http.response.body", "body": _frames(batch), "more_body": True})

    @staticmethod
    async def _watch_disconnect(receive: Any, conn: Connection) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                conn.close("gone")
                return
