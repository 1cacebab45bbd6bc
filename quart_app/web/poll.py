"""Long-polling: GET /api/poll, stateless, answered by any instance."""

from __future__ import annotations

import contextlib

from quart import Blueprint, Response, request
from quart_schema import hide

from ..domain.ids import GLOBAL_BOARD
from ..engine.base import EngineUnavailable, Event
from ..engine.hub import HEARTBEAT, Closed, Reset
from ..runtime import runtime
from .errors import BadRequestBody
from .requests import identify
from .streams import authorized_rooms, open_connection, parse_top, reset_events

poll = Blueprint("poll", __name__)

MAX_EVENTS = 500
DEFAULT_TIMEOUT = 25.0
MAX_TIMEOUT = 30.0


def _timeout() -> float:
    raw = request.args.get("timeout")
    if raw in (None, ""):
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise BadRequestBody(400, "Bad Request", "timeout must be a number of seconds") from None
    if not 0 <= value <= MAX_TIMEOUT:
        raise BadRequestBody(400, "Bad Request", f"timeout must be between 0 and {MAX_TIMEOUT:g}")
    return value


def _answer(events: list[Event], cursor: str) -> Response:
    # The envelopes are already JSON: splice them in instead of decoding and re-encoding.
    body = '{"events":[' + ",".join(event.text for event in events) + f'],"cursor":"{cursor}"}}'
    response = Response(body, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


@poll.get("/api/poll")
@hide
async def long_poll() -> Response:
    rt = runtime()
    identity = identify(allow_query=True)
    rooms = authorized_rooms(identity, request.args.get("rooms"))
    if not rooms:
        raise BadRequestBody(400, "Bad Request", "name at least one room: ?rooms=a,b")
    timeout, top = _timeout(), parse_top(request.args.get("top"))
    if identity.sub is not None:
        with contextlib.suppress(EngineUnavailable):
            await rt.engine.presence_poll(identity.sub)

    cursor = request.args.get("cursor")
    if not cursor:
        snapshot = [await rt.hub.snapshot(top)] if GLOBAL_BOARD in rooms else []
        return _answer(snapshot, snapshot[0].cursor if snapshot else rt.hub.cursor())

    conn, _, initial = await open_connection(rt, identity, rooms, cursor, top)
    conn.conflate = False  # per request: over budget, answer with what fits (below)
    try:
        if initial:
            return _answer(initial, rt.hub.cursor(conn.last_seq))
        try:
            batch = [e for e in await conn.next_batch(timeout) if e is not HEARTBEAT]
        except Reset as reset:
            return _answer(
                await reset_events(rt, conn, reset.reason, top), rt.hub.cursor(conn.last_seq)
            )
        except Closed:
            # Too slow to take a burst (or shutting down): come back from where you were.
            return _answer([], rt.hub.cursor(conn.last_seq))
        if len(batch) > MAX_EVENTS:
            batch = batch[:MAX_EVENTS]
            return _answer(batch, batch[-1].cursor)
        # Nothing pending means everything the hub fanned out so far was not for us.
        position = conn.last_seq if batch else max(conn.last_seq, rt.hub.head_seq)
        return _answer(batch, rt.hub.cursor(position))
    finally:
        conn.close("gone")
