from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from quart import Quart

from quart_app import create_app
from quart_app.config import Settings, load_settings

from .helpers import SECRET, Api, serving
from .services import LiveServer, PostgresServer, RedisClusterSet, RedisServer, redis_command


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
    redis_command(redis_server.port, "FLUSHALL")
    yield redis_server.url


@pytest.fixture(name="redis_cluster", scope="session")
def _redis_cluster() -> Iterator[RedisClusterSet]:
    """Three masters with a replica each; tests that kill a node start their own."""
    cluster = RedisClusterSet()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(name="cluster_url")
def _cluster_url(redis_cluster: RedisClusterSet) -> str:
    """The session's cluster, flushed."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(name="postgres_server", scope="session")
def _postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


# --- apps under test -------------------------------------------------------------------------
# One fresh app per test (while_serving runs once per app), started with test_app() so the
# lifespan (store, engine, relay) runs. The engine is parametrized: every test that asks for
# `engine_kind` runs on the in-process engine and on the Redis engine.

ENV_VARS = [name.upper() for name in Settings.model_fields]


@pytest.fixture(name="clean_env")
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the developer's or CI's environment."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(name="engine_kind", params=["memory", "redis"])
def _engine_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(name="engine_url")
def _engine_url(engine_kind: str, request: pytest.FixtureRequest) -> str | None:
    """REDIS_URL for the engine under test: None selects the memory engine."""
    if engine_kind == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


DB_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(name="db_kind", params=DB_KINDS)
def _db_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(name="database_url")
async def _database_url(
    db_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A fresh, empty database of the kind under test (a new PostgreSQL database per test)."""
    if db_kind == "sqlite":
        yield f"sqlite:///{tmp_path}/pulse.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(server.url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield server.url.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(server.url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture(name="make_app")
def _make_app(tmp_path: Path, clean_env: None) -> Callable[..., Quart]:
    """create_app with test settings: a SQLite file in tmp_path, an HMAC secret, quick relay."""

    def make(**overrides: object) -> Quart:
        values: dict[str, object] = {
            "database_url": f"sqlite:///{tmp_path}/pulse.db",
            "jwt_secret": SECRET,
            "log_level": "warning",
            # PROTOCOL 3.6 limits off unless a test sets them: many tests drive one token
            # or one address harder than a client should (tests/*/test_*limits.py set them)
            "max_connections_per_user": 0,
            "rate_limit_writes": 0,
            "rate_limit_publish": 0,
            **overrides,
        }
        return create_app(load_settings(**values))

    return make


@pytest.fixture(name="api")
async def _api(make_app: Callable[..., Quart], engine_url: str | None) -> AsyncIterator[Api]:
    """A started app on the engine under test (SQLite), with a client and tokens."""
    async with serving(make_app(redis_url=engine_url)) as api:
        yield api


@pytest.fixture(name="memory_api")
async def _memory_api(make_app: Callable[..., Quart]) -> AsyncIterator[Api]:
    """A started app on the memory engine, for tests whose subject is not the engine."""
    async with serving(make_app()) as api:
        yield api


@pytest.fixture(name="live_servers")
def _live_servers(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start real instances: `live_servers(env={...})`; all are stopped after the test.
    Instances started by one test share its working directory, so by default they share
    one SQLite file."""
    started: list[LiveServer] = []

    def start(
        env: dict[str, str] | None = None, port: int | None = None, args: tuple[str, ...] = ()
    ) -> LiveServer:
        server = LiveServer(str(tmp_path), env, port, args)
        # Listed before it starts: one that never gets healthy is still killed at teardown.
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


@pytest.fixture(name="live_server")
def _live_server(live_servers: Callable[..., LiveServer]) -> LiveServer:
    """One instance on the embedded default (memory engine, SQLite, development-mode auth)."""
    return live_servers()


@pytest.fixture(name="shared_servers", scope="module")
def _shared_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LiveServer]]:
    """`shared_servers(env={...}, args=(...))`: one instance per distinct configuration for all
    the tests of a module that only read from it, are refused by it, or use rooms and players
    of their own (a start costs 3-7 s on a loaded machine). Tests that kill, drain or limit a
    server, or count what is on its board or in its metrics (other than by a difference),
    keep their own (`live_servers`)."""
    started: dict[tuple[tuple[tuple[str, str], ...], tuple[str, ...]], LiveServer] = {}

    def shared(env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> LiveServer:
        key = (tuple(sorted((env or {}).items())), args)
        if key not in started:
            workdir = tmp_path_factory.mktemp("shared_server")
            # Listed before it starts: one that never gets healthy is still killed at teardown.
            started[key] = server = LiveServer(str(workdir), env, None, args)
            server.start()
        return started[key]

    try:
        yield shared
    finally:
        for server in started.values():
            server.kill()


@pytest.fixture(name="shared_live_server", scope="module")
def _shared_live_server(shared_servers: Callable[..., LiveServer]) -> LiveServer:
    """The module's shared instance on the embedded default (as `live_server`)."""
    return shared_servers()


@pytest.fixture(name="own_redis")
def _own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone, which the test may stop and start again (same port)."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
