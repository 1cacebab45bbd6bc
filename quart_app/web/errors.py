"""Every error is application/problem+json (RFC 9457); no input yields a 500 with a trace."""

from __future__ import annotations

import json
import logging
from typing import Any

from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from ..auth import AuthError
from ..engine.base import EngineUnavailable
from ..services.errors import ServiceError
from ..store.database import DatabaseUnavailable, is_database_lost

log = logging.getLogger(__name__)


class BadRequestBody(Exception):
    """A request body or query the service cannot accept, with its status."""

    def __init__(
        self, status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.errors = status, title, detail, errors


def problem_json(
    status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None
) -> str:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return json.dumps(body)


def problem_headers(status: int, retry_after: int = 1) -> list[tuple[bytes, bytes]]:
    """The headers of a problem answered by a raw handler (PROTOCOL 7)."""
    headers = [(b"content-type", b"application/problem+json")]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    elif status in (429, 503):  # PROTOCOL 7: these always say when to come back
        headers.append((b"retry-after", b"%d" % retry_after))
    return headers


async def send_problem(
    send: Any,
    prefix: str,
    status: int,
    title: str,
    detail: str,
    *,
    close: bool = False,
    retry_after: int = 1,
) -> None:
    """The same answer from a raw ASGI handler: `prefix` is "http" for a plain response,
    "websocket.http" to refuse a WebSocket handshake. `close`: not kept alive after it."""
    body = problem_json(status, title, detail).encode()
    headers = problem_headers(status, retry_after)
    # Framed by its length, as the fast lane frames it (not chunked by h11 for want of one).
    headers.append((b"content-length", b"%d" % len(body)))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": f"{prefix}.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.response.body", "body": body})


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    response = Response(
        problem_json(status, title, detail, errors),
        status=status,
        content_type="application/problem+json",
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def install(app: Quart) -> None:
    @app.errorhandler(BadRequestBody)
    async def _bad_body(exc: BadRequestBody) -> Response:
        return problem(exc.status, exc.title, exc.detail, errors=exc.errors)

    @app.errorhandler(ServiceError)
    async def _service(exc: ServiceError) -> Response:
        # (KeysUnavailable knows when the next JWKS fetch is due; others: in a second)
        retry_after = str(getattr(exc, "retry_after", 1))
        headers = {"Retry-After": retry_after} if exc.status == 503 else None
        # A 422 is a validation failure, which PROTOCOL gives an `errors` list, also when the
        # check needed the stored data (a winner who does not play in the match).
        errors = None
        if exc.status == 422:
            errors = [{"loc": [], "msg": exc.detail, "type": "value_error"}]
        return problem(exc.status, exc.title, exc.detail, errors=errors, headers=headers)

    @app.errorhandler(AuthError)
    async def _auth(exc: AuthError) -> Response:
        return problem(401, "Unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})

    @app.errorhandler(EngineUnavailable)
    async def _engine(exc: EngineUnavailable) -> Response:
        return problem(
            503,
            "Service Unavailable",
            "the realtime engine is unavailable; retry",
            headers={"Retry-After": "1"},
        )

    @app.errorhandler(DatabaseUnavailable)
    async def _database(exc: DatabaseUnavailable) -> Response:
        return problem(
            503,
            "Service Unavailable",
            "the database is unavailable; retry",
            headers={"Retry-After": "1"},
        )

    @app.errorhandler(HTTPException)
    async def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        # Keep what the exception says about itself (a 405's Allow, RFC 9110), not its
        # content type: the body is a problem document.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        if status in (429, 503):
            headers["Retry-After"] = "1"
        return problem(status, exc.name, exc.description or exc.name, headers=headers)

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        # A driver's error that a path let through unnamed (not via the store's mapping) is
        # still the database being away: PROTOCOL 7 says 503, never 500.
        if is_database_lost(exc):
            log.warning("database unavailable (unmapped %s): %s", type(exc).__name__, exc)
            return await _database(DatabaseUnavailable(str(exc)))
        log.exception("unhandled error")
        return problem(500, "Internal Server Error", "an unexpected error occurred")
