"""The limits of PROTOCOL 3.6 at the edge: write rate limits and stream admission.

Rate limits: every POST and PUT is counted against its policy before its body is read
("writes", or "publish" for POST /api/publish), per token sub, or per client address for an
anonymous caller (or one whose token is refused: it gets its 401 from the route). Over the
limit: 429 with Retry-After, and, on every answer of a limited route, the RateLimit-Policy
and RateLimit fields of draft-ietf-httpapi-ratelimit-headers (-10/-11): ``"writes";q=100;w=1``
and ``"writes";r=99;t=1``.

Stream admission: an SSE stream or a WebSocket is admitted before it starts (WebSocket:
before the upgrade) when this instance holds fewer than MAX_CONNECTIONS streams (else 503)
and its subject (sub, or client address) fewer than MAX_CONNECTIONS_PER_USER across the
cluster (else 429). Long-polls are not streams and are not counted.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any

from quart import Blueprint, Response, g, request

from ..auth import AuthError, Identity
from ..engine.base import EngineUnavailable
from ..engine.rate_limit import RateDecision
from ..runtime import Runtime, runtime
from ..services.errors import ServiceError
from .errors import problem, send_problem
from .tokens import token_from

log = logging.getLogger(__name__)

PUBLISH_PATH = "/api/publish"
WRITE_METHODS = frozenset({"POST", "PUT"})
# Retry-After of a refused stream: a full instance is for the load balancer to route
# around at once; a user at its limit frees a slot only when one of its streams closes.
RETRY_FULL_SECONDS = 2
RETRY_USER_SECONDS = 5


# rate limits ----------------------------------------------------------------------------------
def _policy(rt: Runtime, path: str) -> tuple[str, int]:
    if path == PUBLISH_PATH:
        return "publish", rt.settings.rate_limit_publish
    return "writes", rt.settings.rate_limit_writes


def _caller() -> str:
    """The limited subject: the token's sub, else the client address."""
    try:
        identity = runtime().auth.identify(
            token_from(request.headers.get("Authorization"), None, None, allow_query=False)
        )
    except (AuthError, ServiceError):
        identity = None
    if identity is not None and identity.sub is not None:
        return "s:" + identity.sub
    return "a:" + (request.remote_addr or "unknown")


async def check_rate_limit() -> Response | None:
    """before_request of the API: refuse a write over its limit before anything is read."""
    if request.method not in WRITE_METHODS or request.url_rule is None:
        return None  # a read, or no such route (404/405 as usual)
    rt = runtime()
    name, rate = _policy(rt, request.path)
    if rate <= 0:
        return None
    try:
        decision = await rt.engine.rate_limit(f"{name}:{_caller()}", rate)
    except EngineUnavailable as exc:
        # Fail open: a write still needs only the database, and refusing every write while
        # Redis is away would turn a degraded service into a down one.
        log.warning("rate limit not checked (%s)", exc)
        return None
    g.rate_limit = (name, decision)
    if decision.allowed:
        return None
    response = problem(
        429,
        "Too Many Requests",
        f"over the {name!r} rate limit of {rate} requests per second; retry after "
        f"{decision.retry_after_seconds} s",
        headers={"Retry-After": str(decision.retry_after_seconds)},
    )
    return response


def rate_limit_fields(name: str, decision: RateDecision) -> dict[str, str]:
    return {
        "RateLimit-Policy": f'"{name}";q={decision.limit};w=1',
        "RateLimit": f'"{name}";r={decision.remaining};t={decision.reset_seconds}',
    }


async def add_rate_limit_fields(response: Response) -> Response:
    """after_request: every answer to a limited request says where its caller stands."""
    checked: tuple[str, RateDecision] | None = g.get("rate_limit")
    if checked is not None:
        for field, value in rate_limit_fields(*checked).items():
            response.headers[field] = value
    return response


def limit_writes(blueprint: Blueprint) -> None:
    blueprint.before_request(check_rate_limit)
    blueprint.after_request(add_rate_limit_fields)


# stream admission -----------------------------------------------------------------------------
class StreamRefused(Exception):
    """A stream over a limit, answered before it starts."""

    def __init__(self, status: int, retry_after: int, detail: str, *, close: bool = False) -> None:
        super().__init__(detail)
        self.status, self.retry_after, self.detail = status, retry_after, detail
        # Not kept alive after the answer: a draining instance's refusal, so that the
        # client's retry reaches another instance (PROTOCOL 3.7).
        self.close = close

    @property
    def title(self) -> str:
        return "Service Unavailable" if self.status == 503 else "Too Many Requests"

    async def send(self, send: Any, prefix: str) -> None:
        """Answer from a raw ASGI handler: `prefix` "http", or "websocket.http" to refuse a
        WebSocket handshake."""
        await send_problem(
            send,
            prefix,
            self.status,
            self.title,
            self.detail,
            close=self.close,
            retry_after=self.retry_after,
        )


@dataclass(slots=True)
class StreamSlot:
    """One admitted stream; `release` (idempotent) when it ends, however it ends."""

    limits: StreamLimits
    subject: str | None  # None: not counted per user (the limit is off)
    released: bool = False
    # The player entered in presence with the admission (one round trip), until the stream's
    # connection takes it over (streams.enter_presence); left by `release` if it never does.
    presence: str | None = None

    async def release(self) -> None:
        if not self.released:
            self.released = True
            await self.limits.release(self)

    async def enter_presence(self, player: str | None) -> None:
        """Enter `player` now if the admission did not (the per-user limit off, or no
        presence asked for): the stream is online from here, and `release` leaves."""
        if player is None or self.presence is not None:
            return
        self.presence = player  # (first: a release leaves it, however this ends)
        try:
            await self.limits.rt.engine.presence_enter(player)
        except EngineUnavailable:
            self.presence = None  # (not entered: the connection's own entry tries again)
            log.warning("presence not recorded: engine unavailable")


class StreamLimits:
    """The open streams of one instance, and the per-user count through the engine."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.open = 0

    async def admit(
        self, identity: Identity, scope: dict[str, Any], *, enter_presence: bool = False
    ) -> StreamSlot:
        settings = self.rt.settings
        if settings.max_connections and self.open >= settings.max_connections:
            raise StreamRefused(
                503,
                RETRY_FULL_SECONDS,
                f"this instance holds its maximum of {settings.max_connections} streams",
            )
        self.open += 1  # reserved before awaiting, so concurrent handshakes cannot overshoot
        slot = StreamSlot(self, None)
        per_user = settings.max_connections_per_user
        if not per_user:
            return slot
        subject = stream_subject(identity, scope)
        player = identity.sub if enter_presence else None
        try:
            if player is None:
                admitted = await self.rt.engine.stream_admit(subject, per_user)
            else:
                admitted = await self.rt.engine.stream_admit_and_enter(subject, per_user, player)
        except BaseException:
            self.open -= 1
            raise
        if not admitted:
            self.open -= 1
            who = "this user" if identity.sub is not None else "this client address"
            raise StreamRefused(
                429, RETRY_USER_SECONDS, f"{who} already holds {per_user} open streams"
            )
        slot.subject = subject
        slot.presence = player
        return slot

    async def release(self, slot: StreamSlot) -> None:
        self.open -= 1
        if slot.subject is not None:
            await self.rt.engine.stream_release(slot.subject)
        if slot.presence is not None:
            player, slot.presence = slot.presence, None
            try:
                await self.rt.engine.presence_leave(player)
            except EngineUnavailable:
                log.warning("presence not cleared: engine unavailable")


def stream_subject(identity: Identity, scope: dict[str, Any]) -> str:
    if identity.sub is not None:
        return "s:" + identity.sub
    client = scope.get("client")
    return "a:" + (client[0] if client else "unknown")


_per_runtime: weakref.WeakKeyDictionary[Runtime, StreamLimits] = weakref.WeakKeyDictionary()


def stream_limits(rt: Runtime) -> StreamLimits:
    """The instance's stream limits (one per runtime, shared by SSE and WebSocket)."""
    limits = _per_runtime.get(rt)
    if limits is None:
        limits = _per_runtime[rt] = StreamLimits(rt)
    return limits
