"""The JSON API of PROTOCOL.md section 4 (matches, leaderboard, players, publish, dev token)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from quart import Blueprint, Response
from quart_schema import document_request, document_response

from ..auth import SCOPE_ADMIN, SCOPE_WRITE, AuthError
from ..domain.ids import UnknownRoom, is_valid_id, parse_rooms
from ..domain.models import (
    PUBLISH_DATA_LIMIT,
    Around,
    DevToken,
    DevTokenIn,
    Entry,
    LeaderboardPage,
    Match,
    MatchCreate,
    MatchProgressIn,
    MatchResultIn,
    MatchWithChanges,
    PlayerOut,
    Presence,
    Problem,
    Published,
    PublishIn,
    RenameIn,
    Rooms,
    SubscribeIn,
)
from ..engine.base import Draft, NoSuchInstance, Publication
from ..runtime import runtime
from ..services.errors import Forbidden, NotFound, Unavailable
from .errors import BadRequestBody
from .limits import limit_writes
from .requests import identify, query_int, read_body, require_scope
from .streams import authorized_rooms, change_rooms

# How long the instance holding a stream may take to apply a subscribe (PROTOCOL 3.4).
ROUTE_TIMEOUT = 2.0

api = Blueprint("api", __name__, url_prefix="/api")
limit_writes(api)  # PROTOCOL 3.6: every POST/PUT counted before its body is read


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def checked_id(value: str, what: str) -> str:
    # An id outside the id alphabet cannot exist: answer as for any unknown resource.
    if not is_valid_id(value):
        raise NotFound(f"no {what} {value!r}")
    return value


@api.post("/matches")
@document_request(MatchCreate)
@document_response(Match, 201)
@document_response(Match, 200)  # the same id and players again: the stored match
@document_response(Problem, 409)
async def create_match() -> Response:
    require_scope(SCOPE_WRITE)
    body = await read_body(MatchCreate)
    status, match = await runtime().matches.create(body, body.match_id or uuid.uuid4().hex)
    return json_response(match, status)


@api.get("/matches/<match_id>")
@document_response(MatchWithChanges)
async def get_match(match_id: str) -> Response:
    identify()
    return json_response(await runtime().matches.get(checked_id(match_id, "match")))


@api.post("/matches/<match_id>/start")
@document_response(Match)
async def start_match(match_id: str) -> Response:
    require_scope(SCOPE_WRITE)
    return json_response(await runtime().matches.start(checked_id(match_id, "match")))


@api.post("/matches/<match_id>/progress")
@document_request(MatchProgressIn)
@document_response(Published, 202)
async def match_progress(match_id: str) -> Response:
    require_scope(SCOPE_WRITE)
    body = await read_body(MatchProgressIn)
    cursor = await runtime().matches.progress(checked_id(match_id, "match"), body)
    return json_response({"id": cursor}, 202)


@api.post("/matches/<match_id>/result")
@document_request(MatchResultIn)
@document_response(MatchWithChanges)
async def match_result(match_id: str) -> Response:
    require_scope(SCOPE_WRITE)
    body = await read_body(MatchResultIn)
    return json_response(await runtime().matches.result(checked_id(match_id, "match"), body))


@api.post("/matches/<match_id>/cancel")
@document_response(Match)
async def cancel_match(match_id: str) -> Response:
    require_scope(SCOPE_WRITE)
    return json_response(await runtime().matches.cancel(checked_id(match_id, "match")))


@api.get("/leaderboard")
@document_response(LeaderboardPage)
async def leaderboard() -> Response:
    identify()
    offset = query_int("offset", 0, 0, 10_000_000)
    limit = query_int("limit", 100, 1, 1000)
    page = await runtime().leaderboard.page(offset, limit)  # already JSON text
    return Response(page, content_type="application/json")


@api.get("/players/<player_id>")
@document_response(PlayerOut)
async def player(player_id: str) -> Response:
    identify()
    return json_response(await runtime().leaderboard.player(checked_id(player_id, "player")))


@api.put("/players/<player_id>")
@document_request(RenameIn)
@document_response(Entry)
async def rename_player(player_id: str) -> Response:
    identity = identify()
    if identity.sub is None:
        raise AuthError("a bearer token is required")
    if not identity.may_read_player(player_id):
        raise Forbidden("only the player or an admin may rename a player")
    body = await read_body(RenameIn)
    await runtime().players.rename(checked_id(player_id, "player"), body.name)
    return json_response(await runtime().leaderboard.player(player_id))


@api.get("/players/<player_id>/around")
@document_response(Around)
async def around(player_id: str) -> Response:
    identify()
    radius = query_int("radius", 5, 0, 100)
    return json_response(
        await runtime().leaderboard.around(checked_id(player_id, "player"), radius)
    )


@api.get("/presence")
@document_response(Presence)
async def presence() -> Response:
    identify()
    return json_response({"online_count": await runtime().engine.online_count()})


@api.post("/publish")
@document_request(PublishIn)
@document_response(Published, 202)
async def publish() -> Response:
    require_scope(SCOPE_ADMIN)
    body = await read_body(PublishIn)
    if body.data_size() > PUBLISH_DATA_LIMIT:
        raise BadRequestBody(413, "Content Too Large", "data must be at most 16 KiB of JSON")
    try:
        rooms = parse_rooms([body.room])
    except UnknownRoom:
        rooms = []
    if not rooms:  # a blank name is no room either (it was published to none, 202)
        raise BadRequestBody(400, "Bad Request", f"unknown room {body.room!r}")
    events = await runtime().engine.publish(
        Publication(events=(Draft(tuple(rooms), body.event, body.data),))
    )
    return json_response({"id": events[-1].cursor}, 202)


async def _change_rooms(action: str) -> Response:
    rt = runtime()
    identity = identify()
    if identity.sub is None:
        raise AuthError("anonymous streams cannot be changed: send the stream's token")
    body = await read_body(SubscribeIn)
    rooms = authorized_rooms(identity, body.rooms)
    request = {
        "action": action,
        "connection_id": body.connection_id,
        "sub": identity.sub,
        "rooms": rooms,
    }
    instance = body.connection_id.partition("-")[0]
    try:
        if instance == rt.hub.instance_id:
            answer = await change_rooms(rt, request)
        else:
            answer = await rt.engine.call(instance, request, ROUTE_TIMEOUT)
    except NoSuchInstance:
        raise NotFound("no such connection") from None
    except TimeoutError:
        raise Unavailable("the instance holding this stream did not answer") from None
    if answer["status"] == 401:
        raise AuthError(answer["detail"])
    if answer["status"] == 403:
        raise Forbidden(answer["detail"])
    if answer["status"] == 404:
        raise NotFound(answer["detail"])
    if answer["status"] != 200:
        raise Unavailable("the instance holding this stream could not apply the change")
    return json_response({"rooms": answer["rooms"]})


@api.post("/subscribe")
@document_request(SubscribeIn)
@document_response(Rooms)
async def subscribe() -> Response:
    return await _change_rooms("subscribe")


@api.post("/unsubscribe")
@document_request(SubscribeIn)
@document_response(Rooms)
async def unsubscribe() -> Response:
    return await _change_rooms("unsubscribe")


# Registered only in development mode (no key configured): otherwise the route does not exist,
# in the router or in /openapi.json.
dev = Blueprint("dev", __name__, url_prefix="/api/dev")
limit_writes(dev)  # anonymous callers: by client address


@dev.post("/token")
@document_request(DevTokenIn)
@document_response(DevToken)
async def dev_token() -> Response:
    body = await read_body(DevTokenIn)
    token = runtime().auth.issue(body.sub, body.scope, body.ttl_seconds)
    return json_response({"access_token": token})
