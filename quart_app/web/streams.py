"""What every transport does the same way: rooms and their access rules, resume, snapshots,
presence. The transports (sse.py, poll.py, ws.py) only parse and write."""

from __future__ import annotations

import logging
from typing import Any

from ..auth import Identity
from ..domain.ids import GLOBAL_BOARD, UnknownRoom, parse_rooms, room_owner
from ..engine.base import EngineUnavailable, Event, LogGap
from ..engine.hub import DEFAULT_SNAPSHOT_TOP, Connection
from ..runtime import Runtime
from ..services.errors import Forbidden, Unavailable
from ..store.database import DatabaseUnavailable
from .errors import BadRequestBody
from .limits import StreamSlot

log = logging.getLogger(__name__)

# A dependency that does not answer (Redis, the database) while a stream reads the board or
# the log: the stream ends cleanly or answers 503, never an error inside the server.
DEPENDENCY_DOWN = (EngineUnavailable, DatabaseUnavailable)

MAX_TOP = 1000


def scope_headers(scope: dict[str, Any]) -> dict[str, str]:
    """A raw ASGI request's headers by lower-case name."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def authorized_rooms(identity: Identity, raw: str | list[str] | None) -> list[str]:
    """The requested rooms; 400 for an unknown name, 403 for someone else's player room."""
    try:
        rooms = parse_rooms(raw)
    except UnknownRoom as exc:
        raise BadRequestBody(400, "Bad Request", f"unknown room {str(exc)!r}") from None
    if len(rooms) > 100:
        raise BadRequestBody(400, "Bad Request", "at most 100 rooms per connection")
    for room in rooms:
        owner = room_owner(room)
        if owner is not None and not identity.may_read_player(owner):
            raise Forbidden(f"room {room!r} belongs to another player")
    return rooms


def parse_top(raw: str | int | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_SNAPSHOT_TOP
    try:
        top = int(raw)
    except (TypeError, ValueError):
        raise BadRequestBody(400, "Bad Request", "top must be an integer") from None
    if not 1 <= top <= MAX_TOP:
        raise BadRequestBody(400, "Bad Request", f"top must be between 1 and {MAX_TOP}")
    return top


async def reset_events(rt: Runtime, conn: Connection, reason: str, top: int) -> list[Event]:
    """stream:reset, then a fresh snapshot where the client watches the board."""
    events = [rt.hub.stream_event("stream:reset", {"reason": reason}, conn.last_seq)]
    rt.hub.windows.forget(conn)  # the windows it held are dropped with the rest of its state
    if GLOBAL_BOARD in conn.rooms:
        events.append(await rt.hub.snapshot(top))
    events += await rt.hub.windows.current(conn.rooms, conn)  # fresh windows too
    return events


async def resumed_windows(rt: Runtime, conn: Connection) -> list[Event]:
    """Windows are never replayed: a resumed client gets fresh ones first."""
    try:
        return await rt.hub.windows.current(conn.rooms, conn)
    except (EngineUnavailable, DatabaseUnavailable):
        conn.close("gone")
        raise Unavailable("the board cannot be read now; retry") from None


async def open_connection(
    rt: Runtime, identity: Identity, rooms: list[str], cursor: str | None, top: int
) -> tuple[Connection, str, list[Event]]:
    """Register a connection: resuming after `cursor`, or live from the head with a snapshot.

    Returns the connection, the cursor it starts from, and the events to send first.
    """
    hub = rt.hub
    if cursor:
        try:
            conn = hub.open(
                identity.sub, rooms, identity.expires_at, after_seq=hub.resume_position(cursor)
            )
            return conn, cursor, await resumed_windows(rt, conn)
        except LogGap as gap:
            conn = hub.open(identity.sub, rooms, identity.expires_at)
            try:
                reset = await reset_events(rt, conn, gap.reason, top)
            except (EngineUnavailable, DatabaseUnavailable):
                conn.close("gone")
                raise Unavailable("the board cannot be read now; retry") from None
            return conn, hub.cursor(conn.last_seq), reset
    conn = hub.open(identity.sub, rooms, identity.expires_at)
    start = hub.cursor(conn.last_seq)
    try:
        initial = [await hub.snapshot(top)] if GLOBAL_BOARD in rooms else []
        initial += await hub.windows.current(rooms, conn)
    except (EngineUnavailable, DatabaseUnavailable):
        # The board comes from the engine, or from SQL while the engine's is incomplete:
        # with either down the stream cannot start with it (503, never a 500).
        conn.close("gone")
        raise Unavailable("the board cannot be read now; retry") from None
    return conn, start, initial


async def enter_presence(rt: Runtime, conn: Connection, slot: StreamSlot | None = None) -> None:
    if slot is not None and slot.presence is not None and slot.presence == conn.sub:
        # Entered with the admission's round trip: the connection takes it over.
        slot.presence = None
        conn.presence = True
        return
    if conn.sub is not None and not conn.presence:
        conn.presence = True
        try:
            await rt.engine.presence_enter(conn.sub)
        except EngineUnavailable:
            log.warning("presence not recorded: engine unavailable")


async def leave_presence(rt: Runtime, conn: Connection) -> None:
    if conn.presence and conn.sub is not None:
        conn.presence = False
        try:
            await rt.engine.presence_leave(conn.sub)
        except EngineUnavailable:
            log.warning("presence not cleared: engine unavailable")


async def change_rooms(rt: Runtime, request: dict[str, Any]) -> dict[str, Any]:
    """Subscribe or unsubscribe rooms of a stream held by this instance (PROTOCOL 3.4).
    Also the handler of calls routed here from other instances, hence dicts in and out."""
    conn = rt.hub.connections.get(request["connection_id"])
    if conn is None:
        return {"status": 404, "detail": "no such connection"}
    if conn.sub is None:
        return {"status": 401, "detail": "an anonymous stream cannot be changed"}
    if conn.sub != request["sub"]:
        return {"status": 403, "detail": "the stream belongs to another identity"}
    if request["action"] == "subscribe":
        added = rt.hub.join(conn, request["rooms"])
        if GLOBAL_BOARD in added:
            conn.push(await rt.hub.snapshot(DEFAULT_SNAPSHOT_TOP))
        await rt.hub.windows.push_current(conn, added)
    else:
        rt.hub.leave(conn, request["rooms"])
    return {"status": 200, "rooms": sorted(conn.rooms)}
