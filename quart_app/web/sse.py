"""Server-Sent Events: GET /api/events, as a raw ASGI handler.

Quart's streaming response costs a task, a timeout and generator frames per connection
(about 10 KB more per idle stream, measured). Here, once the stream is open and caught up,
the task only waits for the client to leave; the hub writes the stream's frames to the
socket itself (raw_socket.py). Without a raw socket, this task writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from ..auth import AuthError, Identity
from ..engine.hub import Closed, Connection, Reset
from ..runtime import Runtime
from ..services.errors import ServiceError
from .dead_peers import bound_unacknowledged
from .errors import BadRequestBody, send_problem
from .limits import StreamRefused, stream_limits
from .raw_socket import ChunkedSink, hypercorn_h11_writer, sse_frames
from .raw_start import hypercorn_start_stream
from .request_parts import query_params, stream_headers
from .stream_exit import release_stream
from .streams import (
    DEPENDENCY_DOWN,
    authorized_rooms,
    enter_presence,
    open_connection,
    parse_top,
    reset_events,
)
from .token_cache import TokenCache
from .tokens import token_from

log = logging.getLogger(__name__)

PATH = "/api/events"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
Scope = dict[str, Any]
# Retry-After of a stream refused while this instance drains: another instance can take it.
RETRY_DRAINING_SECONDS = 1


class EventStream:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        # A reconnect storm is many clients with tokens verified before (by this instance,
        # a minute ago): each check is a signature and claims check, cached until `exp`.
        self.tokens = TokenCache(runtime.auth.verify)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        # One flat coroutine on purpose: every suspended frame and local is memory held for
        # the stream's lifetime, times the number of streams.
        try:
            identity, rooms, cursor, top = self._parse(scope)
        except AuthError as exc:
            await send_problem(send, "http", 401, "Unauthorized", str(exc))
            return
        except (BadRequestBody, ServiceError) as exc:
            await send_problem(send, "http", exc.status, exc.title, exc.detail)
            return
        if scope["method"] == "HEAD":
            # Headers only, and the response ends: a stream (or the hub's raw chunks) after
            # a HEAD response would corrupt the keep-alive connection it shares.
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        rt = self.rt
        if rt.draining:  # PROTOCOL 3.7: new streams go to another instance
            await _draining().send(send, "http")
            return
        try:  # PROTOCOL 3.6: over a connection limit, refused before the stream starts
            slot = await stream_limits(rt).admit(identity, scope, enter_presence=True)
        except StreamRefused as refused:
            await refused.send(send, "http")
            return
        try:
            conn, start, initial = await open_connection(rt, identity, rooms, cursor, top)
        except ServiceError as exc:  # the board unreadable (a dependency down): 503
            await slot.release()
            await send_problem(send, "http", exc.status, exc.title, exc.detail)
            return
        except BaseException:
            await slot.release()
            raise
        if conn.closed:  # born closed: draining began while it was admitted
            await slot.release()
            await _draining().send(send, "http")
            return
        del identity
        conn.writer = asyncio.current_task()
        writer = hypercorn_h11_writer(send, scope)
        try:
            try:
                await self._begin(send, scope, conn, start, initial)
                del initial, start, rooms, cursor  # a snapshot is large: not kept meanwhile
                await enter_presence(rt, conn, slot)
                while conn.catching_up:
                    await self._send(send, await self._catch_up(conn, top))
                if conn.closed:  # ended meanwhile (its token expired): nobody will wake us
                    raise Closed(conn.closed)
                if writer is not None:
                    # The heartbeat write is the dead-peer probe: bound how long it may
                    # stay unacknowledged (PROTOCOL 3.6, see dead_peers.py).
                    bound_unacknowledged(writer.transport, rt.settings.tcp_user_timeout_seconds)
                    conn.attach(ChunkedSink(writer.transport, writer))
                    while (await receive())["type"] != "http.disconnect":
                        pass
                else:
                    await self._pump(send, receive, conn, top)
            except asyncio.CancelledError:
                if not conn.closed:  # not the hub ending the stream: the server is
                    raise
            except (Closed, *DEPENDENCY_DOWN):
                pass  # the log or board was unreadable while catching up: resume later
            if conn.closed in ("slow", "drain"):
                # Lands after what the socket already holds; the client resumes with its
                # cursor. Draining (PROTOCOL 3.7): no stream:reset, only a jittered retry, so
                # EventSources come back to the other instances spread out.
                if conn.closed == "slow":
                    hint = rt.hub.stream_event("stream:reset", {"reason": "slow"}, conn.last_seq)
                    last_word = hint.sse
                else:
                    retry_ms = random.randint(0, rt.settings.drain_retry_max_ms)
                    last_word = f"retry: {retry_ms}\n\n".encode()
                if writer is not None:
                    ChunkedSink(writer.transport).write_bytes(last_word)
                else:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(1.0):
                            await send(
                                {"type": "http.response.body", "body": last_word, "more_body": True}
                            )
        finally:
            reason: str | None = conn.closed  # (mypy narrows it from before the awaits)
            drained = reason == "drain"
            conn.close("gone")
            # The client hears the end before the bookkeeping, which may wait on Redis.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            if drained and writer is not None:
                # Not kept alive: the client's next request must not come back here through
                # this connection, but go wherever the load balancer sends it now.
                writer.transport.close()
            await release_stream(rt, slot, conn)

    def _parse(self, scope: Scope) -> tuple[Identity, list[str], str | None, int]:
        if scope["method"] not in ("GET", "HEAD"):
            raise BadRequestBody(405, "Method Not Allowed", "use GET")
        query = query_params(scope["query_string"])
        authorization, cookie, last_event_id = stream_headers(scope)
        token = token_from(authorization, query.get("access_token"), cookie, allow_query=True)
        identity = self.tokens.verify(token) if token else self.rt.auth.identify(None)
        rooms = authorized_rooms(identity, query.get("rooms"))
        if not rooms:
            raise BadRequestBody(400, "Bad Request", "name at least one room: ?rooms=a,b")
        cursor = last_event_id or query.get("last_event_id")
        return identity, rooms, cursor, parse_top(query.get("top"))

    async def _begin(
        self, send: Any, scope: Scope, conn: Connection, start: str, initial: list[Any]
    ) -> None:
        opened = self.rt.hub.stream_event(
            "stream:open",
            {"connection_id": conn.id, "rooms": sorted(conn.rooms), "cursor": start},
            conn.last_seq,
        )
        retry = f"retry: {self.rt.settings.sse_retry_ms}\n\n".encode()
        first = retry + sse_frames([opened, *initial])
        if hypercorn_start_stream(send, scope, 200, SSE_HEADERS, first):
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "more_body": True, "body": first})

    async def _catch_up(self, conn: Connection, top: int) -> list[Any]:
        try:
            return await conn.catch_up_step()
        except Reset as reset:
            return await reset_events(self.rt, conn, reset.reason, top)

    @staticmethod
    async def _send(send: Any, batch: list[Any]) -> None:
        if batch:
            await send({"type": "http.response.body", "body": sse_frames(batch), "more_body": True})

    @staticmethod
    async def _until_disconnect(receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _pump(self, send: Any, receive: Any, conn: Connection, top: int) -> None:
        """Without a raw socket: a task waits for the client to leave, this one writes."""
        watcher = asyncio.get_running_loop().create_task(self._until_disconnect(receive))
        watcher.add_done_callback(lambda _: conn.close("gone"))
        try:
            while True:
                try:
                    batch = await conn.next_batch()
                except Reset as reset:
                    batch = await reset_events(self.rt, conn, reset.reason, top)
                except Closed:
                    return
                await self._send(send, batch)
        finally:
            watcher.cancel()


def _draining() -> StreamRefused:
    return StreamRefused(
        503, RETRY_DRAINING_SECONDS, "this instance is shutting down; retry", close=True
    )
