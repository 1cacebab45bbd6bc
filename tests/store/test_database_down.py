"""The database lost while serving: requests that need it answer 503 with Retry-After (PROTOCOL
7: a dependency down), never a 500, and /readyz says so."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest
from quart import Quart

from ..helpers import assert_problem, serving
from ..services import PostgresServer


@pytest.fixture(name="own_postgres")
def _own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test alone, which the test stops."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.mark.postgres
async def test_writes_answer_503_with_retry_after_when_the_database_goes_away(
    own_postgres: PostgresServer, make_app: Callable[..., Quart]
) -> None:
    async with serving(make_app(database_url=own_postgres.url)) as api:
        await api.create("m1", "ann", "bob")
        assert own_postgres.process is not None
        own_postgres.process.send_signal(signal.SIGINT)  # fast shutdown: sessions are cut
        own_postgres.process.wait(20)

        for reply in (
            await api.post("/api/matches/m1/result", {"winner_id": "ann"}),
            await api.post("/api/matches", {"match_id": "m2", "player_ids": ["ann", "bob"]}),
        ):
            assert_problem(reply, 503)
            assert reply.headers["Retry-After"]
        ready = await api.get("/readyz", token=None)
        assert ready.status == 503 and ready.body["database"] is False
