"""An SSE stream served by the fast lane: the ASGI `receive` and `send` of one `GET`, on the
connection's socket, with h11 left IDLE throughout (fast_lane.py).

Served through Hypercorn, a new stream cost an HTTPStream, the ASGI plumbing around it, and
h11's state moves for the request, the response head and its end: about a fifth of a
reconnect storm's profiled CPU. Here `send` frames what web/sse.py sends as h11 would for an
HTTP/1.1 peer (a stream in chunks; a whole answer, such as a problem, with a Content-Length),
adds Hypercorn's own response headers, and writes the head with the first chunk in one
`write`. It also carries the socket's writer as `direct_writer`, so the hub writes the
stream's events to it itself (raw_socket.py), as it does under Hypercorn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .errors import problem_headers, problem_json
from .raw_response import server_headers


class LaneReceive:
    """The app's `receive`: the (empty) request body, then `http.disconnect` once the lane
    saw the client leave (disconnect())."""

    __slots__ = ("_body_sent", "_disconnected", "_gone")

    def __init__(self) -> None:
        self._body_sent = False
        self._disconnected = False
        self._gone: asyncio.Future[None] | None = None

    async def __call__(self) -> dict[str, Any]:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if not self._disconnected:
            if self._gone is None or self._gone.done():
                self._gone = asyncio.get_running_loop().create_future()
            await self._gone
        return {"type": "http.disconnect"}

    def disconnect(self) -> None:
        self._disconnected = True
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)


class LaneSend:
    """The app's `send` for one response on a raw HTTP/1.1 socket.

    `keep_alive` False: the head says `connection: close` and the connection closes after
    the response; the app's own `connection: close` header (a refusal while draining) does
    the same. `status` is what was sent, for the access log."""

    __slots__ = (
        "direct_writer",
        "_config",
        "keep_alive",
        "status",
        "_headers",
        "_chunked",
        "done",
        "_ended",
    )

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        config: Any,
        *,
        keep_alive: bool,
        ended: Callable[[LaneSend], None],
    ) -> None:
        self.direct_writer = writer  # (raw_socket.hypercorn_h11_writer looks for it)
        self._config = config
        self.keep_alive = keep_alive
        self.status: int | None = None  # the status sent, once the head went out
        self._headers: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self._chunked = False
        self.done = False  # the response ended (its last chunk, or its whole body, went)
        # Called once, as the response ends: the connection can take its next request at
        # once, as Hypercorn's can (the handler may still be releasing the stream's slot).
        self._ended = ended

    async def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._headers = (message["status"], list(message.get("headers", ())))
        elif kind == "http.response.body" and not self.done and self._headers is not None:
            self._body(message.get("body", b""), message.get("more_body", False))

    def _body(self, body: bytes, more: bool) -> None:
        transport = self.direct_writer.transport
        if transport.is_closing():  # the client left: nothing to write (uvloop would raise)
            if not more:
                self._end(keep_alive=False)
            return
        if self.status is None:
            transport.write(self._head(len(body), more) + self._framed(body))
        elif body:
            transport.write(self._framed(body))
        if not more:
            if self._chunked:
                transport.write(b"0\r\n\r\n")
            self._end(keep_alive=self.keep_alive)

    def _end(self, *, keep_alive: bool) -> None:
        self.done = True
        self.keep_alive = keep_alive
        self._ended(self)

    def _framed(self, body: bytes) -> bytes:
        if not self._chunked or not body:
            return body
        return b"%x\r\n%b\r\n" % (len(body), body)

    def _head(self, length: int, more: bool) -> bytes:
        assert self._headers is not None
        self.status, headers = self._headers
        lines = [b"HTTP/1.1 %d \r\n" % self.status]
        for name, value in (*headers, *server_headers(self._config)):
            if name == b"connection":
                if b"close" in value.lower():
                    self.keep_alive = False
                continue
            if name == b"content-length":
                continue  # (framed here, by what is sent)
            lines.append(name + b": " + value + b"\r\n")
        if more:  # a stream: chunks; a whole answer: its length (as h11 frames them)
            self._chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        else:
            lines.append(b"content-length: %d\r\n" % length)
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def end(self) -> None:
        """After the app returned: a response it never began (it failed) is a 500, as
        Hypercorn answers then; one it left open stays unfinished (no last chunk: the client
        must not take it for whole). Either way the connection is not kept."""
        if self.done:
            return
        if self.status is None:
            self.keep_alive = False
            self._headers = (500, problem_headers(500))
            self._body(problem_json(500, "Internal Server Error", "").encode(), False)
        else:
            self._end(keep_alive=False)
