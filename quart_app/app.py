"""The ASGI application: Quart for the API, the realtime and hot routes beside it."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

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


class Routes:
    """The ASGI app Hypercorn serves: the realtime endpoints and the hot write beside Quart."""

    def __init__(self, runtime: Runtime, quart_asgi: Any) -> None:
        self.event_stream = EventStream(runtime)
        self.websocket = WebSocketEndpoint(runtime)
        # (also answered straight from the fast lane: web/fast_lane.py finds it here)
        self.long_poll = LongPoll(runtime, TokenCache(runtime.auth.verify))
        # The hot write: a well-formed result skips Quart; anything else falls back to it.
        self.match_result = ResultRoute(runtime, TokenCache(runtime.auth.verify), quart_asgi)
        self.quart_asgi = quart_asgi

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind, path = scope["type"], scope.get("path")
        if kind == "http" and path == SSE_PATH:
            await self.event_stream(scope, receive, send)
        elif kind == "websocket" and path == WS_PATH:
            await self.websocket(scope, receive, send)
        elif kind == "http" and path == POLL_PATH:
            await self.long_poll(scope, receive, send)
        elif is_result_path(scope):
            await self.match_result(scope, receive, send)
        else:
            await self.quart_asgi(scope, receive, send)


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
    app.asgi_app = Routes(runtime, app.asgi_app)  # type: ignore[method-assign,assignment]

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
