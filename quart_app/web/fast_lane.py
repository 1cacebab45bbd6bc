"""A fast lane past Hypercorn's request cycle for plain `GET`s of the long-poll and SSE paths.

Profiles of a keep-alive long-poll and of a new SSE stream put about half of the server's CPU
in Hypercorn's per-request machinery: h11 parsing and validating the request head, the
HTTPStream's scope, an asyncio.Queue and a task per request, and the event loop of LaneProtocol
around them. A crowd of pollers sends thousands of such heads a second, all alike.

Here, when a whole request head arrives on an idle HTTP/1.1 connection (h11 in IDLE on both
sides, nothing buffered in it, no stream) and it is a plain `GET` of one of the two paths, the
head is parsed with two regular expressions.

A long-poll is then answered by the lane itself, in the connection's own task (a poll never
reads a body nor waits for a disconnect): web/poll.py's `answer`, its bytes written to the
socket, Hypercorn's access log, keep-alive limits and idle timer served as Hypercorn would.
h11 never leaves IDLE, so there is no request cycle to recycle after the answer (that recycle,
the HTTPStream and h11's event processing were a third of a poll's CPU under a crowd).

An SSE stream lives long: web/sse.py's handler runs in a task of the connection's task group
(as Hypercorn runs an app), with lane_stream.py's `receive` and `send` on the socket instead
of an HTTPStream, while the connection keeps reading to notice the client leaving. h11 stays
IDLE here too; once the stream ended, the connection is idle again (or closes). A client
sends nothing on a stream: bytes it sends anyway (a pipelined request) are not served, and
the connection closes after the stream. (An ASGI app without these handlers: Hypercorn's.)

Everything else goes to Hypercorn byte for byte: other paths and methods, HTTP/1.0 and HTTP/2,
a body, `Expect`, `Upgrade`, a head the expressions do not match (obsolete line folding, bare
LF line ends, a header name or value h11 might judge differently), an oversized head, bytes
that arrive while Hypercorn owns a request. Pipelined bytes after a lane request are looked at
again once it is answered; after a `Connection: close` request they are dropped, as the
connection closes after its answer.
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from typing import Any, Final, NamedTuple, Protocol

from ..metrics import LANE_REQUESTS
from .lane_stream import LaneReceive, LaneSend
from .raw_socket import HIGH_WATER
from .turns import TurnBudget

POLL_PATH: Final = "/api/poll"  # web/poll.py PATH
SSE_PATH: Final = "/api/events"  # web/sse.py PATH


# The request line of a lane request: the target as h11 accepts it (visible ASCII), the path
# exactly one of ours (a %-escaped or dotted path goes to Hypercorn, which unquotes it).
_REQUEST_LINE = re.compile(rb"GET (/api/(?:poll|events))(?:\?([\x21-\x7e]*))? HTTP/1\.1\r\n")
# A header line as h11's grammar has it (a token, optional whitespace, a value of visible
# characters, obs-text and inner blanks); anything else is Hypercorn's to judge.
_HEADER_LINE = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?)[ \t]*\r\n"
)
# Where h11 sees the end of a head (it also accepts bare LF line ends, which we decline).
_HEAD_END = re.compile(rb"\n\r?\n")
_PREFIXES = (b"GET " + POLL_PATH.encode(), b"GET " + SSE_PATH.encode())
_DECLINED_HEADERS = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"http2-settings"})


class LaneRequest(NamedTuple):  # (a tuple: a frozen dataclass cost a tenth of the parse)
    path: str
    raw_path: bytes
    query_string: bytes
    headers: list[tuple[bytes, bytes]]  # names lowercased, values stripped: as h11 gives them
    close: bool  # `Connection: close`
    length: int  # bytes of the head


class _Verdict:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_MORE: Final = _Verdict("NEED_MORE")  # could still become a lane request
DECLINE: Final = _Verdict("DECLINE")  # Hypercorn's


def may_be_lane(data: bytes, start: int = 0) -> bool:
    """Whether `data` from `start` starts (or could start, once more arrives) like a lane
    request: only those wait for the arrival budget, everything else goes to Hypercorn
    undelayed."""
    size = len(data) - start
    for prefix in _PREFIXES:
        if data[start : start + len(prefix)] == prefix[:size]:
            return True
    return False


# The arrival budget of each event loop's lane (process-wide, as the loop: every connection
# of a worker shares it). Per loop, not global: a budget's pending turn dies with its loop.
_ARRIVALS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnBudget] = (
    weakref.WeakKeyDictionary()
)


def arrival_budget(loop: asyncio.AbstractEventLoop) -> TurnBudget:
    """The lane heads this loop parses per turn (turns.py): a crowd whose next heads arrive
    together is parsed and set up over several turns, so a write in between waits for one
    budget's worth of them, not for all (issue 9: up to 635 in one turn were measured)."""
    budget = _ARRIVALS.get(loop)
    if budget is None:
        budget = _ARRIVALS[loop] = TurnBudget()
    return budget


class HeaderMemo:
    """The header block one connection sent last, parsed: a poller repeats its headers (all
    but the request line) with every poll, so they are parsed once per connection, not once
    per poll. (Per connection: clients' tokens and cookies make their blocks differ.)"""

    __slots__ = ("block", "parsed")

    def __init__(self) -> None:
        self.block = b""
        self.parsed: tuple[list[tuple[bytes, bytes]], bool] | None = None


def parse_head(
    data: bytes, max_head: int, memo: HeaderMemo | None = None, start: int = 0
) -> LaneRequest | _Verdict:
    """The lane request at `start` in `data` (read there: pipelined requests are not copied
    off the buffer one by one), NEED_MORE, or DECLINE. With `memo`, a header block equal to
    the one it holds is not parsed again (its parse is shared, read-only)."""
    end_match = _HEAD_END.search(data, start)
    if end_match is None:
        if len(data) - start > max_head:
            return DECLINE
        return NEED_MORE if may_be_lane(data, start) else DECLINE
    end = end_match.end()
    if end - start > max_head:
        return DECLINE
    line = _REQUEST_LINE.match(data, start)
    if line is None:
        return DECLINE
    block = data[line.end() : end]
    if memo is not None and memo.parsed is not None and block == memo.block:
        parsed = memo.parsed
    else:
        verdict = _parse_headers(block)
        if isinstance(verdict, _Verdict):
            return DECLINE
        parsed = verdict
        if memo is not None:
            memo.block, memo.parsed = block, parsed
    headers, close = parsed
    raw_path = line.group(1)
    return LaneRequest(
        path=POLL_PATH if raw_path == _PREFIXES[0][4:] else SSE_PATH,
        raw_path=raw_path,
        query_string=line.group(2) or b"",
        headers=headers,
        close=close,
        length=end - start,
    )


def _parse_headers(block: bytes) -> tuple[list[tuple[bytes, bytes]], bool] | _Verdict:
    """The header lines of a head (from after the request line to the blank line's end):
    the headers as h11 gives them and `Connection: close`, or DECLINE."""
    headers: list[tuple[bytes, bytes]] = []
    hosts = 0
    close = False
    position = 0
    blank = len(block) - 2
    while position < blank:
        header = _HEADER_LINE.match(block, position, blank)
        if header is None:
            return DECLINE
        position = header.end()
        name = header.group(1).lower()
        value = header.group(2)
        if name in _DECLINED_HEADERS:
            return DECLINE
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            if value != b"0":
                return DECLINE
        elif name == b"connection":
            tokens = [token.strip() for token in value.lower().split(b",")]
            if b"upgrade" in tokens:
                return DECLINE
            close = close or b"close" in tokens
        headers.append((name, value))
    if position != blank or block[blank:] != b"\r\n" or hosts != 1:
        return DECLINE  # (h11 wants exactly one Host on HTTP/1.1)
    return headers, close


class LaneProtocol(Protocol):
    """What the lane reads and counts of a connection's HTTP/1.1 side: Hypercorn's
    H11Protocol (hypercorn_fast.py), or lane_front.py's connection that has no Hypercorn."""

    app: Any  # Hypercorn's ASGIWrapper around the app
    config: Any  # Hypercorn's Config
    context: Any  # Hypercorn's WorkerContext (mark_request, terminated)
    keep_alive_requests: int
    ssl: bool
    client: tuple[str, int] | None
    server: tuple[str, int] | None


class FastLane:
    """One connection's lane: takes the bytes Hypercorn's protocol would have been given
    and serves what it can, handing the rest on.

    Its connection (`server`) is hypercorn_fast.TimerTCPServer, or lane_front.FrontConnection
    before Hypercorn has one. Either gives `loop`, `config`, `context`, `writer`,
    `idle_timer` and `_close()` as TimerTCPServer has them, and: `lane_protocol()`, the
    LaneProtocol when the connection is between requests (else None: the bytes are
    Hypercorn's); `decline(data)`, which hands bytes to Hypercorn; `spawn(fn, *args)`, a task
    for the connection's life."""

    __slots__ = (
        "_server",
        "_buffer",
        "_max_head",
        "_arrivals",
        "_routes",
        "_headers",
        "_stream",
        "_close_after_stream",
    )

    def __init__(self, server: Any) -> None:
        self._server = server
        self._buffer = b""
        self._max_head: int = server.config.h11_max_incomplete_size
        self._arrivals = arrival_budget(server.loop)
        self._routes: Any = None  # the app's app.py Routes, found at the first lane request
        self._headers = HeaderMemo()
        self._stream: LaneReceive | None = None  # the SSE stream this connection serves
        self._close_after_stream = False

    def wants(self) -> bool:
        """Whether the next bytes read are the lane's to look at (feed) or Hypercorn's."""
        return (
            bool(self._buffer)
            or self._stream is not None
            or self._server.lane_protocol() is not None
        )

    async def feed(self, data: bytes) -> None:
        """Bytes read from the socket (never the b"" of EOF: see end())."""
        if self._stream is not None:
            self._close_after_stream = True  # (see the module's docstring)
            return
        data = self._buffer + data if self._buffer else data
        self._buffer = b""
        position = 0  # (where the next request starts: answered ones are not cut off)
        while position < len(data):
            if may_be_lane(data, position):
                # A place in this turn's budget before the parse: past it, this connection's
                # reading waits for a later turn (its bytes stay here, unread by anyone).
                await self._arrivals.take()
            protocol = self._server.lane_protocol()
            if protocol is None:
                break
            verdict = parse_head(data, self._max_head, self._headers, position)
            if verdict is NEED_MORE:
                self._buffer = data[position:]
                return
            if not isinstance(verdict, LaneRequest):
                break
            routes = self._routes or lane_routes(protocol.app)
            if routes is None:
                break  # (another ASGI app: Hypercorn serves it)
            self._routes = routes
            position += verdict.length
            if verdict.path == POLL_PATH:
                await self._answer_poll(protocol, routes.long_poll, verdict)
            else:
                await self._open_stream(protocol, routes.event_stream, verdict)
                if position < len(data):
                    self._close_after_stream = True  # (see the module's docstring)
                return
            if verdict.close or self._server.writer.is_closing():
                return  # (the connection closes after this answer: the rest is moot)
        if position < len(data):
            await self._server.decline(data[position:] if position else data)

    async def end(self) -> None:
        """EOF: a head still partial is Hypercorn's (it answers it as before)."""
        data = self.held()
        if data:
            await self._server.decline(data)

    def held(self) -> bytes:
        """The start of a head the lane holds (waiting for the rest), given up."""
        data, self._buffer = self._buffer, b""
        return data

    def gone(self) -> bool:
        """The connection stopped reading (EOF, an error, or cancelled): the client left.
        True when a stream (or its refusal) is still being made: the connection closes once
        it ended."""
        if self._stream is None:
            return False
        self._close_after_stream = True
        self._stream.disconnect()
        return True

    async def _answer_poll(self, protocol: LaneProtocol, poll: Any, request: LaneRequest) -> None:
        """One long-poll, answered here: what Hypercorn does around a request (the idle timer,
        the request counts, the keep-alive limit, the access log, closing after a `close`),
        with h11 left IDLE on both sides throughout."""
        server = self._server
        server.idle_timer.disarm()  # (Updated(idle=False))
        config = protocol.config
        started = time.time()
        protocol.keep_alive_requests += 1
        await protocol.context.mark_request()
        LANE_REQUESTS[POLL_PATH] += 1
        answer = await poll.answer("GET", request.query_string, request.headers)
        close = (
            answer.close
            or request.close
            or protocol.keep_alive_requests >= config.keep_alive_max_requests
            or protocol.context.terminated.is_set()
        )
        writer = server.writer
        if not writer.is_closing():  # (the client may have left while the poll waited)
            writer.write(poll.encoded(answer, close=close))
            if config.log.access_logger is not None:
                await config.log.access(
                    _request_scope(protocol, request),
                    {"status": answer.status, "headers": answer.headers},
                    time.time() - started,
                )
            if writer.transport.get_write_buffer_size() > HIGH_WATER:
                try:
                    await writer.drain()  # (a client that does not read: wait, as Hypercorn)
                except (ConnectionError, RuntimeError):
                    close = True
        if close or writer.is_closing():
            await server._close()
        else:
            server.idle_timer.arm()  # (Updated(idle=True))

    async def _open_stream(self, protocol: LaneProtocol, sse: Any, request: LaneRequest) -> None:
        """An SSE request: web/sse.py's handler in a task of the connection's task group (as
        Hypercorn runs an app), while this one goes back to reading."""
        server = self._server
        server.idle_timer.disarm()  # (Updated(idle=False))
        config = protocol.config
        protocol.keep_alive_requests += 1
        await protocol.context.mark_request()
        LANE_REQUESTS[SSE_PATH] += 1
        keep_alive = not (
            request.close
            or protocol.keep_alive_requests >= config.keep_alive_max_requests
            or protocol.context.terminated.is_set()
        )
        receive = self._stream = LaneReceive()
        self._close_after_stream = False
        send = LaneSend(server.writer, config, keep_alive=keep_alive, ended=self._stream_ended)
        scope = _request_scope(protocol, request)
        scope["asgi"] = {"spec_version": "2.1", "version": "3.0"}
        server.spawn(self._run_stream, protocol, sse, scope, receive, send)

    async def _run_stream(
        self, protocol: LaneProtocol, sse: Any, scope: Any, receive: LaneReceive, send: LaneSend
    ) -> None:
        server = self._server
        config = protocol.config
        started = time.time()
        try:
            await sse(scope, receive, send)
        except asyncio.CancelledError:
            raise
        except Exception:
            await config.log.exception("Error in ASGI Framework")
        finally:
            send.end()  # (calls _stream_ended, if the response had not ended yet)
            if config.log.access_logger is not None and send.status is not None:
                response: Any = {"status": send.status, "headers": []}
                await config.log.access(scope, response, time.time() - started)
            if self._stream is receive:  # the connection is not kept: see _stream_ended
                await server._close()

    def _stream_ended(self, send: LaneSend) -> None:
        """The stream's response ended (its handler may still be giving back its slot and
        presence): the connection is idle at once, as Hypercorn's is at a response's end, or
        stays the stream's (reading nothing more) until _run_stream closes it."""
        server = self._server
        if (
            send.keep_alive
            and not self._close_after_stream
            and not server.context.terminated.is_set()
            and not server.writer.is_closing()
        ):
            self._stream = None
            server.idle_timer.arm()  # (Updated(idle=True))


def lane_routes(wrapped_app: Any) -> Any:
    """app.py's Routes (its LongPoll and EventStream), or None: another ASGI app."""
    app = getattr(wrapped_app, "app", None)  # (Hypercorn's ASGIWrapper)
    if hasattr(app, "long_poll") and hasattr(app, "event_stream"):
        return app
    return None


def _request_scope(protocol: LaneProtocol, request: LaneRequest) -> dict[str, Any]:
    """The request's ASGI scope as Hypercorn would make it, less what only an app reads
    (`asgi`, `state`, `extensions`): all Hypercorn's access log reads, for a lane poll."""
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https" if protocol.ssl else "http",  # (as HTTPStream.scheme)
        "path": request.path,
        "raw_path": request.raw_path,
        "query_string": request.query_string,
        "root_path": protocol.config.root_path,
        "headers": request.headers,
        "client": protocol.client,
        "server": protocol.server,
    }
