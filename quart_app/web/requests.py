"""Reading requests strictly: content type, size, JSON, schema, query numbers, identity."""

from __future__ import annotations

import json
import math
from typing import TypeVar
from weakref import WeakKeyDictionary

from pydantic import BaseModel, ValidationError
from quart import has_websocket_context, request, websocket

from ..auth import Authenticator, AuthError, Identity
from ..runtime import runtime
from ..services.errors import Forbidden
from .errors import BadRequestBody
from .token_cache import TokenCache
from .tokens import token_from

M = TypeVar("M", bound=BaseModel)


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


async def read_body(model: type[M]) -> M:
    if request.mimetype != "application/json":
        raise BadRequestBody(415, "Unsupported Media Type", "send the body as application/json")
    raw = await request.get_data(cache=False)  # over MAX_CONTENT_LENGTH: 413 from Quart
    try:
        # NaN and Infinity (or 1e400) are not JSON: they would go out in events no browser parses.
        payload = json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestBody(400, "Bad Request", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequestBody(400, "Bad Request", "the body is nested too deeply") from None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = [
            {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise BadRequestBody(
            422, "Unprocessable Content", "the body does not match the schema", errors
        ) from None


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestBody(400, "Bad Request", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadRequestBody(400, "Bad Request", f"{name} must be between {low} and {high}")
    return value


def bearer_token(*, allow_query: bool = False) -> str | None:
    incoming = websocket if has_websocket_context() else request
    return token_from(
        incoming.headers.get("Authorization"),
        incoming.args.get("access_token"),
        incoming.headers.get("Cookie"),
        allow_query=allow_query,
    )


def identify(*, allow_query: bool = False) -> Identity:
    auth = runtime().auth
    token = bearer_token(allow_query=allow_query)
    if not token:
        return auth.identify(token)
    # A verified token is remembered until its exp (token_cache.py): a game server sends
    # the same one with every result, and verifying it was a sixth of a result's CPU.
    tokens = _verified.get(auth)
    if tokens is None:
        tokens = _verified[auth] = TokenCache(auth.verify)
    return tokens.verify(token)


# One cache per Authenticator (per app), gone with it.
_verified: WeakKeyDictionary[Authenticator, TokenCache] = WeakKeyDictionary()


def require_scope(scope: str) -> Identity:
    identity = identify()
    if identity.sub is None:
        raise AuthError("a bearer token is required")
    if not identity.has(scope):
        raise Forbidden(f"this action needs the {scope!r} scope")
    return identity
