"""Long-polling: GET /api/poll, stateless, answered by any instance (PROTOCOL 3.2).

A raw ASGI handler, like sse.py and ws.py: under a crowd of pollers, Quart's per-request
machinery (request context, routing, Response) and a JWT check per poll were most of an
instance's time, and starved every other request. Here a poll costs a query parse, a cached
token (token_cache.py), and an answer shared with every poller that asks the same question
(engine/poll_answers.py): no connection, queue or task of its own. `answer` is the whole of
it; a plain GET on HTTP/1.1 is answered with it by the fast lane (fast_lane.py) without an ASGI
call, everything else comes through `__call__`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, NamedTuple

from ..auth import AuthError, Identity
from ..domain.ids import GLOBAL_BOARD
from ..engine.base import EngineUnavailable, Event, LogGap
from ..engine.poll_answers import RESET, SHUTDOWN, answer_body, rooms_key
from ..engine.poll_cursor import answer_cursor
from ..engine.windows import window_rooms
from ..runtime import Runtime
from ..services.errors import ServiceError, Unavailable
from ..store.database import DatabaseUnavailable
from .errors import BadRequestBody, problem_headers, problem_json
from .raw_response import Headers, SharedResponses, encode_response, hypercorn_h11_responder
from .request_parts import query_params, request_headers
from .streams import authorized_rooms, parse_top
from .token_cache import TokenCache
from .tokens import token_from
from .turns import TurnBudget

log = logging.getLogger(__name__)

PATH = "/api/poll"
DEFAULT_TIMEOUT = 25.0
MAX_TIMEOUT = 30.0
# Presence is "long-polled within the last 40 s" (PROTOCOL 4): telling the engine once per
# 10 s per sub keeps that true and spares the engine (Redis) a call per poll.
PRESENCE_EVERY = 10.0
PRESENCE_MEMORY = 100_000  # subs remembered for that; pruned past this
ROOMS_MEMORY = 10_000  # (rooms, caller) questions remembered; forgotten all at once past this
ANSWER_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]

Scope = dict[str, Any]


class PollAnswer(NamedTuple):
    status: int
    headers: Headers  # without Content-Length and Connection
    body: bytes
    close: bool  # the connection closes after it (draining)


def _problem(status: int, title: str, detail: str, *, close: bool) -> PollAnswer:
    return PollAnswer(
        status, problem_headers(status), problem_json(status, title, detail).encode(), close
    )


class LongPoll:
    def __init__(self, runtime: Runtime, tokens: TokenCache) -> None:
        self.rt = runtime
        self.tokens = tokens
        self._presence_told: dict[str, float] = {}
        self._answers = SharedResponses(200, ANSWER_HEADERS)
        self._turns = TurnBudget()
        self._authorized: dict[tuple[str | None, Identity], tuple[list[str], bool]] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """The ASGI way in (HEAD, HTTP/2, the test client, FAST_LANE off): the answer written
        through `send`, or straight to the socket where raw_response.py can."""
        method = scope["method"]
        status, headers, body, close = await self.answer(
            method, scope["query_string"], scope["headers"]
        )
        if status == 200:
            respond = (
                hypercorn_h11_responder(send, scope, self._answers)
                if method == "GET" and not close
                else None
            )
            if respond is not None:
                await respond(200, headers, body)
                return
        # Framed by Content-Length, a problem too (as the lane frames it); a HEAD gets none.
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        if method == "HEAD":
            body = b""
        if close:
            headers = [*headers, (b"connection", b"close")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def encoded(self, answer: PollAnswer, *, close: bool) -> bytes:
        """The whole HTTP/1.1 response of `answer` (fast_lane.py writes it as it is): a 200
        kept alive is encoded once per body and shared by every poller given that body."""
        status, headers, body, _ = answer
        if status == 200:
            return self._answers.get(body, close=close)
        return encode_response(status, headers, body, close=close)

    async def answer(
        self, method: str, query_string: bytes, headers: list[tuple[bytes, bytes]]
    ) -> PollAnswer:
        """The answer to one poll, a problem included (never raises but for cancellation)."""
        started = time.perf_counter()
        turns = self._turns
        await turns.take()  # a crowd's arrivals spread over turns too (turns.py)
        admitted = turns.turn
        try:
            identity, (rooms, windowed), cursor, timeout, top = self._parse(
                method, query_string, headers
            )
            if identity.sub is not None:
                await self._presence(identity.sub)
            windows = self.rt.hub.windows  # rank windows ride along (PROTOCOL 3.2)
            if windowed:
                timeout = windows.poll_timeout(rooms, cursor, timeout)
            body = await self._answer(identity, rooms, cursor, timeout, top)
            if windowed:
                body = await windows.add_to_poll(body, rooms, cursor)
            if turns.turn != admitted:  # it waited: its answer takes a place of its own
                await turns.take()
            # Draining (PROTOCOL 3.7): the connection closes after the answer, so that the
            # poller's next poll reaches another instance instead of this one again.
            answer = PollAnswer(200, ANSWER_HEADERS, body, self.rt.draining)
        except AuthError as exc:
            answer = _problem(401, "Unauthorized", str(exc), close=False)
        except (BadRequestBody, ServiceError) as exc:
            answer = _problem(exc.status, exc.title, exc.detail, close=self.rt.draining)
        except (EngineUnavailable, DatabaseUnavailable):
            answer = _problem(503, "Service Unavailable", "retry shortly", close=False)
        except Exception:
            log.exception("long-poll failed")
            answer = _problem(500, "Internal Server Error", "unexpected error", close=False)
        self.rt.metrics.observe_request(PATH, method, answer.status, time.perf_counter() - started)
        return answer

    # the request -------------------------------------------------------------------------------
    def identify(self, token: str | None) -> Identity:
        """The caller, with the token's verification cached for its lifetime."""
        if token:
            return self.tokens.verify(token)
        return self.rt.auth.identify(None)

    def _parse(
        self, method: str, query_string: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[Identity, tuple[list[str], bool], str | None, float, int]:
        if method not in ("GET", "HEAD"):
            raise BadRequestBody(405, "Method Not Allowed", "use GET")
        query = query_params(query_string)
        authorization, cookie, _ = request_headers(headers)
        identity = self.identify(
            token_from(authorization, query.get("access_token"), cookie, allow_query=True)
        )
        return (
            identity,
            self._rooms(identity, query.get("rooms")),
            query.get("cursor"),
            _timeout(query.get("timeout")),
            parse_top(query.get("top")),
        )

    def _rooms(self, identity: Identity, raw: str | None) -> tuple[list[str], bool]:
        """The rooms a poll asks for, authorized, and whether any is a rank window: a poller
        asks the same every poll, so the answer is remembered per (rooms, caller)."""
        key = (raw, identity)
        known = self._authorized.get(key)
        if known is None:
            rooms = authorized_rooms(identity, raw)
            if not rooms:
                raise BadRequestBody(400, "Bad Request", "name at least one room: ?rooms=a,b")
            known = (rooms, bool(window_rooms(rooms)))
            if len(self._authorized) >= ROOMS_MEMORY:
                self._authorized.clear()
            self._authorized[key] = known
        return known

    async def _presence(self, sub: str) -> None:
        now = time.monotonic()
        told = self._presence_told
        last = told.get(sub)
        if last is not None and now - last < PRESENCE_EVERY:
            return
        try:
            await self.rt.engine.presence_poll(sub)
        except EngineUnavailable:
            return  # presence is best effort; the poll itself may still be answered
        if len(told) >= PRESENCE_MEMORY:
            for stale in [s for s, at in told.items() if now - at >= PRESENCE_EVERY]:
                del told[stale]
        told[sub] = now

    # the answer --------------------------------------------------------------------------------
    async def _answer(
        self, identity: Identity, rooms: list[str], cursor: str | None, timeout: float, top: int
    ) -> bytes:
        hub = self.rt.hub
        if hub.draining:  # PROTOCOL 3.7: a new poll goes elsewhere (a pending one answers)
            raise Unavailable("this instance is shutting down; retry")
        if not cursor:
            # A fresh poller starts at the head: nothing before it is owed to it. (Encoded
            # before the snapshot's read, as the snapshot encodes its own: the same cursor.)
            start = hub.cursor(answer_cursor(None, hub.head_seq))
            snapshot = [await hub.snapshot(top)] if GLOBAL_BOARD in rooms else []
            return answer_body(snapshot, start)
        try:
            position = hub.resume_position(cursor)
        except LogGap as gap:
            return await self._reset(gap.reason, rooms, top, hub.head_seq)
        epoch, key, polls = hub.engine.epoch, rooms_key(rooms), hub.polls
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if identity.expires_at is not None:  # an answer by expiry; the next poll is a 401
            deadline = min(deadline, loop.time() + identity.expires_at - time.time())
        checked = False
        while True:
            # Behind the head (or ahead of it: a cursor from an instance whose feed is ahead,
            # checked once against the log): the log has the answer, shared per question.
            while position < hub.head_seq or (position > hub.head_seq and not checked):
                checked = True
                try:
                    body, position = await polls.read(epoch, position, key)
                except LogGap as gap:
                    return await self._reset(gap.reason, rooms, top, hub.head_seq)
                if hub.engine.epoch != epoch:
                    return await self._reset("unknown", rooms, top, 0)
                if body is not None:
                    return body
            if hub.draining or loop.time() >= deadline:
                return answer_body([], hub.cursor(answer_cursor(None, position)))
            # At the head: wait with every poller of these rooms for the next of their events.
            group, wake = polls.join(key)
            try:
                async with asyncio.timeout_at(deadline):
                    await wake
            except TimeoutError:
                # Released, but this poller's slice had not come yet: its events are in the
                # group (the head passed them: an empty answer here would skip them).
                if not group.released:
                    return answer_body([], hub.cursor(answer_cursor(None, position)))
            finally:
                polls.leave(group, wake)
            reason = group.reason
            if reason == RESET:
                return await self._reset("unknown", rooms, top, 0)
            if reason == SHUTDOWN:
                # Its own position: since the drain released the group, the head may have
                # moved past events of these rooms that this poller never got.
                return answer_body([], hub.cursor(answer_cursor(None, position)))
            body = polls.body_for(group, position)
            if body is not None:
                return body
            position = max(position, group.fired_at)  # its events were all behind us

    async def _reset(self, reason: str, rooms: list[str], top: int, position: int) -> bytes:
        """stream:reset, then a fresh snapshot where the client watches the board; the
        cursor of `position` (the head, or the start of a new log)."""
        hub = self.rt.hub
        events: list[Event] = [hub.stream_event("stream:reset", {"reason": reason}, position)]
        if GLOBAL_BOARD in rooms:
            try:
                events.append(await hub.snapshot(top))
            except (EngineUnavailable, DatabaseUnavailable):
                raise EngineUnavailable("the board cannot be read now") from None
        return answer_body(events, hub.cursor(answer_cursor(None, position)))


def _timeout(raw: str | None) -> float:
    if raw in (None, ""):
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise BadRequestBody(400, "Bad Request", "timeout must be a number of seconds") from None
    if not 0 <= value <= MAX_TIMEOUT:  # (NaN fails this too)
        raise BadRequestBody(400, "Bad Request", f"timeout must be between 0 and {MAX_TIMEOUT:g}")
    return value
