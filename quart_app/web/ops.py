"""Operations: liveness, readiness, metrics, the page."""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from quart import Blueprint, Response, current_app, send_from_directory
from quart_schema import hide

from ..runtime import runtime
from ..store.tables import outbox

ops = Blueprint("ops", __name__)


@ops.get("/healthz")
@hide
async def healthz() -> Response:
    return Response('{"status":"ok"}', content_type="application/json")


@ops.get("/readyz")
@hide
async def readyz() -> Response:
    rt = runtime()
    if rt.draining:  # PROTOCOL 3.7: at once, without asking the dependencies
        return Response(
            '{"status":"draining"}',
            status=503,
            content_type="application/json",
            headers={"Retry-After": "1"},
        )
    database, engine = await asyncio.gather(rt.store.ping(), rt.engine.ping())
    ready = database and engine
    body = {"status": "ready" if ready else "unavailable", "database": database, "engine": engine}
    response = Response(
        json.dumps(body), status=200 if ready else 503, content_type="application/json"
    )
    if not ready:
        response.headers["Retry-After"] = "1"
    return response


@ops.get("/metrics")
@hide
async def prometheus() -> Response:
    rt = runtime()
    extra: dict[str, float] = {}
    try:
        extra["rankpulse_outbox_pending"] = await rt.store.db.fetch_val(
            sa.select(sa.func.count()).select_from(outbox)
        )
    except Exception:  # noqa: BLE001 - a scrape reports what it can; /readyz says why
        pass
    return Response(rt.metrics.render(extra), content_type=CONTENT_TYPE_PLAIN_0_0_4)


@ops.get("/")
@hide
async def index() -> Response:
    static = current_app.static_folder
    assert static is not None
    response: Response = await send_from_directory(static, "index.html")
    return response
