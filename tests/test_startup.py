"""Start-up with real processes: instances started at the same moment on a fresh database all
come up (the migration waits for the others); an instance whose Redis or database is not up
yet keeps retrying, answers /readyz 503 (and /healthz 200) meanwhile, and becomes ready when
they come."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .faults import FaultProxy
from .helpers import SECRET
from .services import LiveServer, PostgresServer, RedisServer, wait_until

INSTANCES = 4


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any, Any]:
    """(status, parsed body, headers) of one request; error statuses are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null"), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), exc.headers
    except OSError:
        return 0, None, {}


def ready(server: LiveServer) -> bool:
    return http("GET", server.url + "/readyz")[0] == 200


def start_together(
    live_servers: Callable[..., LiveServer], count: int, env: dict[str, str]
) -> list[LiveServer]:
    """Start `count` instances at the same moment (one thread each, released by a barrier)."""
    barrier = threading.Barrier(count)
    servers: list[LiveServer] = []
    failures: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            servers.append(live_servers(env=env))
        except BaseException as exc:  # noqa: BLE001 - reported below with the server's log
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not failures, failures
    return servers


def play_one_match(server: LiveServer, match_id: str) -> int:
    """Create a match and POST its result; the status of the result POST."""
    token = server.token("game-server", "matches:write")
    status, body, _ = http(
        "POST",
        server.url + "/api/matches",
        {"match_id": match_id, "player_ids": ["ann", "bob"]},
        token,
    )
    assert status in (200, 201), (status, body)
    status, body, _ = http(
        "POST", server.url + f"/api/matches/{match_id}/result", {"winner_id": "ann"}, token
    )
    return status


def test_instances_started_together_on_a_fresh_database_all_come_up(
    database_url: str, redis_url: str, live_servers: Callable[..., LiveServer]
) -> None:
    # (live_servers last: its instances are stopped before the database is dropped)
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "JWT_SECRET": SECRET}
    servers = start_together(live_servers, INSTANCES, env)
    assert len(servers) == INSTANCES
    for server in servers:
        wait_until(lambda server=server: ready(server), 60, f"{server.url}/readyz 200")
    assert play_one_match(servers[0], "m-together") == 200
    for server in servers:
        assert "database is locked" not in server.log()


def board_record(server: LiveServer, token: str) -> dict[str, tuple[int, int]]:
    """Each player's (wins, losses) as the board shows them."""
    status, body, _ = http("GET", server.url + "/api/leaderboard?limit=10", token=token)
    if status != 200:
        return {}
    return {e["player_id"]: (e["wins"], e["losses"]) for e in body.get("entries", [])}


@pytest.fixture(name="stopped_redis")
def _stopped_redis() -> Iterator[RedisServer]:
    """A redis-server whose port is chosen but not listening until the test starts it."""
    server = RedisServer()
    yield server
    server.stop()


def test_an_instance_waits_for_redis_that_is_not_up_yet(
    live_servers: Callable[..., LiveServer], stopped_redis: RedisServer
) -> None:
    server = live_servers(
        env={"REDIS_URL": stopped_redis.url, "JWT_SECRET": SECRET, "LOG_LEVEL": "info"}
    )
    assert http("GET", server.url + "/healthz")[0] == 200
    status, body, headers = http("GET", server.url + "/readyz")
    assert status == 503 and body["engine"] is False
    assert headers["Retry-After"]
    # Reads that need the engine: 503 with Retry-After, never a 500.
    token = server.token("watcher")
    for path in ("/api/leaderboard?limit=5", "/api/events?rooms=leaderboard:global"):
        status, body, headers = http("GET", server.url + path, token=token)
        assert status == 503, (path, status, body)
        assert headers["Retry-After"]
    # A result is durable in SQL: accepted now, published once Redis is there.
    assert play_one_match(server, "m-before-redis") == 200

    stopped_redis.start()
    wait_until(lambda: ready(server), 15, "/readyz 200 once Redis is up")
    assert play_one_match(server, "m-after-redis") == 200
    wait_until(
        lambda: board_record(server, token) == {"ann": (2, 0), "bob": (0, 2)},
        15,
        "the board to show both results (the one from before Redis came up too)",
    )


@pytest.mark.postgres
def test_an_instance_waits_for_a_database_that_is_not_up_yet(
    live_servers: Callable[..., LiveServer], redis_url: str
) -> None:
    database = PostgresServer()  # its port is chosen; nothing listens there yet
    try:
        server = live_servers(
            env={
                "DATABASE_URL": database.url,
                "REDIS_URL": redis_url,
                "JWT_SECRET": SECRET,
                "LOG_LEVEL": "info",
            }
        )
        assert http("GET", server.url + "/healthz")[0] == 200
        status, body, headers = http("GET", server.url + "/readyz")
        assert status == 503 and body["database"] is False
        assert headers["Retry-After"]
        # A request that needs the database: 503 with Retry-After, never a 500.
        token = server.token("game-server", "matches:write")
        status, body, headers = http(
            "POST", server.url + "/api/matches", {"match_id": "m", "player_ids": ["a", "b"]}, token
        )
        assert status == 503, (status, body)
        assert headers["Retry-After"]
        # So does a stream whose first frame is the board (read from SQL until the engine's
        # board is complete), on SSE and long-poll alike.
        for stream in ("/api/events", "/api/poll"):
            status, body, headers = http(
                "GET", server.url + f"{stream}?rooms=leaderboard:global", token=token
            )
            assert status == 503, (stream, status, body)
            assert headers["Retry-After"]

        database.start()
        wait_until(lambda: ready(server), 20, "/readyz 200 once PostgreSQL is up")
        assert play_one_match(server, "m-after-postgres") == 200
        # One log line per failed attempt, with a capped backoff: a few lines, not a flood.
        failures = server.log().count("not reachable")
        assert 1 <= failures <= 30, server.log()
    finally:
        database.stop()


def test_with_migrate_on_start_off_an_instance_waits_for_the_operators_migration(
    live_servers: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = live_servers(env={"MIGRATE_ON_START": "false", "JWT_SECRET": SECRET})
    status, body, _ = http("GET", server.url + "/readyz")
    assert status == 503 and body["database"] is False
    wait_until(lambda: "rankpulse migrate" in server.log(), 15, "the log to name the fix")

    migrated = subprocess.run(
        [sys.executable, "-m", "quart_app", "migrate"],
        env={**os.environ, **server.env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrated.returncode == 0, migrated.stderr
    wait_until(lambda: ready(server), 20, "/readyz 200 once the operator migrated")
    assert play_one_match(server, "m-after-migrate") == 200


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])  # a network fault needs a networked database
def test_an_instance_whose_database_is_blackholed_at_start_serves_and_waits(
    database_url: str, redis_url: str, live_servers: Callable[..., LiveServer]
) -> None:
    port = int(database_url.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = FaultProxy(port).start()
    try:
        proxy.blackhole()  # connections are accepted, then nothing: no refusal to act on
        server = live_servers(
            env={
                "DATABASE_URL": database_url.replace(f":{port}/", f":{proxy.port}/"),
                "REDIS_URL": redis_url,
                "JWT_SECRET": SECRET,
            }
        )
        assert http("GET", server.url + "/healthz")[0] == 200
        status, body, _ = http("GET", server.url + "/readyz")
        assert status == 503 and body["database"] is False

        proxy.pass_through()
        wait_until(lambda: ready(server), 40, "/readyz 200 once the network returns")
        assert play_one_match(server, "m-after-blackhole") == 200
    finally:
        proxy.stop()
