"""A database failure is a 503 with Retry-After on any request path, also where a driver's
error gets through without the store's mapping (PROTOCOL 7: never a 500); other errors stay
500s, so a bug is not passed off as an outage."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import asyncpg  # type: ignore[import-untyped]
import pytest
from quart import Quart

from ..helpers import assert_problem, serving

LOST = {
    "sqlite-locked": sqlite3.OperationalError("database is locked"),
    "asyncpg-connection-closed": asyncpg.exceptions.InterfaceError("connection is closed"),
    "asyncpg-released": asyncpg.exceptions.InterfaceError(
        "cannot call Connection.fetch(): connection has been released back to the pool"
    ),
    "connection-reset": ConnectionResetError(104, "Connection reset by peer"),
    "too-many-connections": asyncpg.exceptions.TooManyConnectionsError("too many clients"),
}


@pytest.mark.parametrize("name", list(LOST))
async def test_a_driver_error_of_a_lost_database_on_any_route_is_a_503(
    make_app: Callable[..., Quart], name: str
) -> None:
    app = make_app()

    @app.route("/test-only/fails")
    async def _fails() -> str:
        raise LOST[name]

    async with serving(app) as api:
        reply = await api.get("/test-only/fails")
    assert_problem(reply, 503)
    assert reply.headers["Retry-After"]


async def test_a_sql_error_that_is_not_an_outage_stays_a_500(
    make_app: Callable[..., Quart],
) -> None:
    app = make_app()

    @app.route("/test-only/bug")
    async def _bug() -> str:
        raise sqlite3.OperationalError("no such table: nothing")

    async with serving(app) as api:
        reply = await api.get("/test-only/bug")
    assert_problem(reply, 500)
