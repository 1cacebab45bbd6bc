"""Operations endpoints: liveness, readiness, the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import Quart

from ..helpers import Api, serving
from ..services import RedisServer


async def test_healthz(api: Api) -> None:
    reply = await api.get("/healthz", token=None)
    assert (reply.status, reply.body) == (200, {"status": "ok"})


async def test_readyz_when_everything_answers(api: Api) -> None:
    reply = await api.get("/readyz", token=None)
    assert reply.status == 200
    assert reply.body["database"] is True and reply.body["engine"] is True


async def test_readyz_is_503_while_redis_is_down(
    make_app: Callable[..., Quart], own_redis: RedisServer
) -> None:
    async with serving(make_app(redis_url=own_redis.url)) as api:
        assert (await api.get("/readyz", token=None)).status == 200
        own_redis.stop()
        reply = await api.get("/readyz", token=None)
        assert reply.status == 503
        assert reply.body["engine"] is False and reply.body["database"] is True
        assert reply.headers["Retry-After"]
        # liveness is not readiness: the process itself is fine
        assert (await api.get("/healthz", token=None)).status == 200
        own_redis.start()
        assert (await api.get("/readyz", token=None)).status == 200


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


async def test_openapi_document(memory_api: Api) -> None:
    reply = await memory_api.get("/openapi.json", token=None)
    assert reply.status == 200
    document = reply.body
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] and document["info"]["version"]
    paths = document["paths"]
    expected = {
        "/api/matches": {"post"},
        "/api/matches/{match_id}": {"get"},
        "/api/matches/{match_id}/start": {"post"},
        "/api/matches/{match_id}/progress": {"post"},
        "/api/matches/{match_id}/result": {"post"},
        "/api/matches/{match_id}/cancel": {"post"},
        "/api/leaderboard": {"get"},
        "/api/players/{player_id}": {"get", "put"},
        "/api/players/{player_id}/around": {"get"},
        "/api/publish": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    for path, operations in paths.items():
        for method, operation in operations.items():
            if method in {"get", "put", "post", "delete", "patch"}:
                assert operation["responses"], (method, path)
    # every reference resolves
    for ref in refs(document):
        assert resolve(document, ref) is not None
    # the documented request of a result is the model the service validates with
    body = paths["/api/matches/{match_id}/result"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    schema = resolve(document, schema["$ref"]) if "$ref" in schema else schema
    assert {"winner_id", "draw"} <= set(schema["properties"])
    create = paths["/api/matches"]["post"]
    assert "201" in create["responses"]
