"""POST /api/matches/{id}/result without Quart's request cycle, for the requests that need none
of it; every other request of that path goes to Quart unchanged.

Profiled at 1,000,000 players and 16 concurrent game servers, Quart's request cycle (request
context, routing, before/after hooks, `Response`, its headers) was a quarter of a result's CPU,
more than the ELO, the SQL and the publish together. The hot route takes a well-formed result
with a token allowed to write straight to the result writer (services/result_writer.py) and
writes its answer in one socket write where it can (raw_response.py).

Nothing changes for a client: a request this path does not take whole, because of its content
type, its length, its token or scope, its id or its body, is handed to Quart with its body
replayed (`receive` gives back what was read), before anything was counted or submitted, so
Quart answers it exactly as before (400, 401, 403, 404, 413, 415, 422; PROTOCOL 7). Once
taken, the rate limit is counted here as Quart would (PROTOCOL 3.6: 429 with Retry-After, the
RateLimit fields on every answer), the result is submitted once, and its errors (404, 409,
422, 503) are the problem documents the Quart error handlers write.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..auth import SCOPE_WRITE, AuthError
from ..domain.ids import is_valid_id
from ..domain.models import MatchResultIn
from ..engine.base import EngineUnavailable
from ..runtime import Runtime
from ..services.errors import ServiceError
from ..store.database import DatabaseUnavailable, is_database_lost
from .errors import problem_json
from .limits import rate_limit_fields
from .raw_response import Headers, hypercorn_h11_responder
from .requests import _finite, _not_json
from .token_cache import TokenCache
from .tokens import token_from

log = logging.getLogger(__name__)

PREFIX = "/api/matches/"
SUFFIX = "/result"
ROUTE = "/api/matches/<match_id>/result"  # the metrics' label, as Quart's rule names it
MAX_BODY = 64 * 1024  # a result body is tens of bytes; anything longer goes to Quart

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_result_path(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    path: str = scope["path"]
    return path.startswith(PREFIX) and path.endswith(SUFFIX)


class ResultRoute:
    def __init__(self, runtime: Runtime, tokens: TokenCache, fallback: App) -> None:
        self.rt = runtime
        self.tokens = tokens
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        match_id = scope["path"][len(PREFIX) : -len(SUFFIX)]
        taken = self._take(scope, match_id)
        if taken is None:
            await self.fallback(scope, receive, send)
            return
        sub, length = taken
        messages, body = await _read_body(receive, length)
        result = _parse(body) if body is not None else None
        if result is None:
            await self.fallback(scope, _replay(messages, receive), send)
            return
        status, headers, answer = await self._answer(sub, match_id, result)
        await _respond(send, scope, status, headers, answer)
        self.rt.metrics.observe_request(ROUTE, "POST", status, time.perf_counter() - started)

    def _take(self, scope: Scope, match_id: str) -> tuple[str, int | None] | None:
        """(the caller's sub, the body's length if announced) when this path can answer the
        request whole: a small JSON body, a valid id, a token allowed to write."""
        if "/" in match_id or not is_valid_id(match_id):
            return None
        authorization = content_type = content_length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                content_length = value
        if content_type is None or content_type.partition(b";")[0].strip().lower() != (
            b"application/json"
        ):
            return None
        length = None  # chunked (or the test client): read up to MAX_BODY
        if content_length is not None:
            if not content_length.isdigit() or int(content_length) > MAX_BODY:
                return None
            length = int(content_length)
        token = token_from(authorization, None, None, allow_query=False)
        if not token:
            return None
        try:
            identity = self.tokens.verify(token)
        except (AuthError, ServiceError):
            return None
        if identity.sub is None or not identity.has(SCOPE_WRITE):
            return None
        return identity.sub, length

    async def _answer(
        self, sub: str, match_id: str, result: MatchResultIn
    ) -> tuple[int, Headers, bytes]:
        headers: Headers = []
        rate = self.rt.settings.rate_limit_writes
        if rate > 0:  # as limits.check_rate_limit, which Quart runs for the API's writes
            try:
                decision = await self.rt.engine.rate_limit(f"writes:s:{sub}", rate)
            except EngineUnavailable as exc:
                log.warning("rate limit not checked (%s)", exc)
            else:
                headers += [
                    (name.lower().encode(), value.encode())
                    for name, value in rate_limit_fields("writes", decision).items()
                ]
                if not decision.allowed:
                    detail = (
                        f"over the 'writes' rate limit of {rate} requests per second; retry "
                        f"after {decision.retry_after_seconds} s"
                    )
                    retry = str(decision.retry_after_seconds).encode()
                    return _problem(429, "Too Many Requests", detail, headers, retry_after=retry)
        try:
            answer = await self.rt.matches.result(match_id, result)
        except ServiceError as exc:
            # As errors.install's handler: 503 says when to retry, a 422 carries `errors`.
            again: bytes | None = None
            if exc.status == 503:
                again = str(getattr(exc, "retry_after", 1)).encode()
            errors = (
                [{"loc": [], "msg": exc.detail, "type": "value_error"}]
                if exc.status == 422
                else None
            )
            return _problem(exc.status, exc.title, exc.detail, headers, again, errors)
        except DatabaseUnavailable:
            detail = "the database is unavailable; retry"
            return _problem(503, "Service Unavailable", detail, headers, b"1")
        except EngineUnavailable:
            detail = "the realtime engine is unavailable; retry"
            return _problem(503, "Service Unavailable", detail, headers, b"1")
        except Exception as exc:  # noqa: BLE001 - as errors.install's last handler
            if is_database_lost(exc):  # PROTOCOL 7: a lost database is 503, never 500
                log.warning("database unavailable (unmapped %s): %s", type(exc).__name__, exc)
                detail = "the database is unavailable; retry"
                return _problem(503, "Service Unavailable", detail, headers, b"1")
            log.exception("unhandled error")
            detail = "an unexpected error occurred"
            return _problem(500, "Internal Server Error", detail, headers)
        return 200, [(b"content-type", b"application/json"), *headers], json.dumps(answer).encode()


async def _read_body(
    receive: Receive, length: int | None
) -> tuple[list[dict[str, Any]], bytes | None]:
    """The messages read and the whole body; None when it is longer than announced (or than
    MAX_BODY), shorter, or the client left (Quart then reads the rest and answers as it
    would have)."""
    limit = MAX_BODY if length is None else length
    messages: list[dict[str, Any]] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        size += len(message.get("body", b""))
        if size > limit:
            return messages, None
        if not message.get("more_body", False):
            break
    if length is not None and size != length:
        return messages, None
    return messages, b"".join(m.get("body", b"") for m in messages)


def _parse(body: bytes) -> MatchResultIn | None:
    """The result, parsed as requests.read_body parses it; None for anything it would refuse."""
    try:
        payload = json.loads(body, parse_constant=_not_json, parse_float=_finite)
        return MatchResultIn.model_validate(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):  # ValidationError is a ValueError
        return None


def _replay(messages: list[dict[str, Any]], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def _problem(
    status: int,
    title: str,
    detail: str,
    headers: Headers,
    retry_after: bytes | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> tuple[int, Headers, bytes]:
    fields: Headers = [(b"content-type", b"application/problem+json"), *headers]
    if retry_after is not None:
        fields.append((b"retry-after", retry_after))
    return status, fields, problem_json(status, title, detail, errors).encode()


async def _respond(send: Send, scope: Scope, status: int, headers: Headers, body: bytes) -> None:
    respond = hypercorn_h11_responder(send, scope)
    if respond is not None:
        await respond(status, headers, body)
        return
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
