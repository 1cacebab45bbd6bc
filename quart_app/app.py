"""The ASGI application: Quart for the API, the realtime and hot routes beside it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from quart import Quart, Response, g, request
from quart_schema import Info, QuartSchema

from .config import Settings, load_settings
from .runtime import Runtime
from .web import errors
from .web.api import api, dev
from .web.openapi import ProblemDocumentingOpenAPI
from .web.ops import ops
from .web.poll import PATH as POLL_PATH
from .web.poll import LongPoll
from .web.result_route import ResultRoute, is_result_path
from .web.sse import PATH as SSE_PATH
from .web.sse import EventStream
from .web.streams import change_rooms
from .web.token_cache import TokenCache
from .web.ws import PATH as WS_PATH
from .web.ws import WebSocketEndpoint

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MAX_REQUEST_BYTES = 1024 * 1024

log = logging.getLogger("quart_app")


def create_app(settings: Settings | None = None) -> Quart:
    settings = settings or load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # "quart_app", as when this lived in the package's __init__: the app's name and root path.
    app = Quart("quart_app", static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        swagger_ui_path="/docs",
        redoc_ui_path=None,
        scalar_ui_path=None,
        info=Info(title="Love Rank Pulse", version="0.1.0"),
        openapi_provider_class=ProblemDocumentingOpenAPI,
    )
    runtime = Runtime(settings)
    app.extensions["pulse"] = runtime
    errors.install(app)
    app.register_blueprint(api)
    if settings.dev_mode:
        app.register_blueprint(dev)
    app.register_blueprint(ops)

    # The realtime endpoints bypass Quart's request machinery (see web/sse.py, web/ws.py,
    # web/poll.py); everything else goes through it.
    quart_asgi = app.asgi_app
    event_stream = EventStream(runtime)
    websocket = WebSocketEndpoint(runtime)
    long_poll = LongPoll(runtime, TokenCache(runtime.auth.verify))
    # The hot write: a well-formed result skips Quart; anything else falls back to it.
    match_result = ResultRoute(
        runtime, TokenCache(runtime.auth.verify), quart_asgi  # type: ignore[arg-type]
    )

    async def asgi(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] == "http" and scope["path"] == SSE_PATH:
            await event_stream(scope, receive, send)
        elif scope["type"] == "websocket" and scope["path"] == WS_PATH:
            await websocket(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == POLL_PATH:
            await long_poll(scope, receive, send)
        elif is_result_path(scope):
            await match_result(scope, receive, send)  # type: ignore[arg-type]
        else:
            await quart_asgi(scope, receive, send)  # type: ignore[arg-type]

    app.asgi_app = asgi  # type: ignore[method-assign,assignment]

    @app.before_request
    async def _clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    async def _count(response: Response) -> Response:
        # By route template (`/api/matches/<match_id>`), never the raw path: bounded series.
        rule = request.url_rule
        runtime.metrics.observe_request(
            rule.rule if rule is not None else None,
            request.method,
            response.status_code,
            time.perf_counter() - g.get("started", time.perf_counter()),
        )
        return response

    @app.before_serving
    async def _start() -> None:
        if settings.dev_mode:
            log.warning(
                "DEVELOPMENT MODE: no JWT_SECRET/JWT_PUBLIC_KEY/JWT_JWKS_URL set; tokens are "
                "signed with a random per-process secret and POST /api/dev/token is open. "
                "Do not run this in production."
            )
        runtime.engine.on_call(lambda request: change_rooms(runtime, request))
        await runtime.auth.start()
        await runtime.start()

    @app.after_serving
    async def _stop() -> None:
        await runtime.auth.stop()
        await runtime.stop()

    return app
