from __future__ import annotations

from collections.abc import Iterator

import pytest

from .services import PostgresServer, RedisServer


@pytest.fixture(name="redis_server", scope="session")
def _redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(name="redis_url")
def _redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A clean Redis for each test (FLUSHALL before), on the session's server."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    redis_server.cli("FLUSHALL")
    yield redis_server.url


@pytest.fixture(name="postgres_server", scope="session")
def _postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()
