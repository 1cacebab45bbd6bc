"""schemathesis against the app's own /openapi.json: every documented operation, with inputs
generated from the schema and beyond it (hostile inputs). No input yields a 5xx (PROTOCOL 7),
and every answer conforms to the document: a documented status code, a body of the documented
schema, the documented content type.

In process, over ASGI: the document is read once from a throwaway app at collection; each
operation then runs against a fresh app of its own (a Quart app's lifespan runs once), which
schemathesis starts and stops around the test."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from quart import Quart
from schemathesis import Case

from quart_app import create_app
from quart_app.config import load_settings

from ..helpers import ADMIN, SECRET, WRITE, Api, assert_problem


def openapi_document() -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="lrp-openapi-") as workdir:
            app = create_app(
                load_settings(
                    database_url=f"sqlite:///{workdir}/pulse.db",
                    jwt_secret=SECRET,
                    log_level="warning",
                )
            )
            async with app.test_app() as test_app:
                response = await test_app.test_client().get("/openapi.json")
                assert response.status_code == 200
                document: dict[str, Any] = await response.get_json()
                return document

    return asyncio.run(read())


schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(name="fuzzed_app")
def _fuzzed_app(make_app: Callable[..., Quart]) -> Quart:
    return make_app()


def operator_token(app: Quart) -> str:
    """Both scopes, so the generated calls reach the handlers instead of stopping at 401/403."""
    token: str = app.extensions["pulse"].auth.issue("fuzzer", f"{ADMIN} {WRITE}", 3600)
    return token


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_every_operation_answers_as_documented_and_never_5xx(case: Case, fuzzed_app: Quart) -> None:
    headers = {"Authorization": f"Bearer {operator_token(fuzzed_app)}"}
    case.call_and_validate(app=fuzzed_app, headers=headers)


async def test_a_wrong_method_is_a_405_naming_the_allowed_ones(memory_api: Api) -> None:
    """Found by schemathesis: RFC 9110 requires Allow on a 405."""
    reply = await memory_api.request("DELETE", "/api/matches/m1")
    assert_problem(reply, 405)
    assert set(reply.headers["Allow"].replace(" ", "").split(",")) >= {"GET"}


async def test_a_publish_to_a_blank_room_is_a_400(memory_api: Api) -> None:
    """Found by schemathesis: "" and "  " were published to no room at all, answering 202."""
    for room in ("", "  "):
        body = {"room": room, "event": "announcement", "data": {}}
        assert_problem(await memory_api.post("/api/publish", body, token="admin"), 400)


async def test_a_numeric_scheduled_at_is_a_422(memory_api: Api) -> None:
    """Found by schemathesis: a number was read as seconds since 1970 (a 1970 match)."""
    body = {"player_ids": ["ann", "bob"], "scheduled_at": 0}
    reply = await memory_api.post("/api/matches", body)
    assert_problem(reply, 422)
    assert reply.body["errors"]
