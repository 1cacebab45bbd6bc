"""`rankpulse`: a bad configuration stops it with a message naming the variable; `token` mints
tokens the service accepts; `rebuild` (a real process) restores the board from SQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from quart import Quart

from quart_app.cli import main
from quart_app.config import Settings, load_settings
from quart_app.engine import create_engine

from .conftest import ENV_VARS
from .helpers import SECRET, board, serving
from .services import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`rankpulse ...` as its own process (`python -m quart_app` is the same entry point)."""
    clean = {k: v for k, v in os.environ.items() if k.upper() not in ENV_VARS}
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "quart_app", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_port_stops_the_start_naming_it(tmp_path: Path) -> None:
    done = run_cli(["serve"], {"PORT": "abc"}, tmp_path)
    assert done.returncode == 1
    assert "PORT" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.startswith("rankpulse: invalid configuration")


@pytest.mark.parametrize(
    ("name", "value"), [("REDIS_URL", "http://x"), ("JWT_ALGORITHMS", "none"), ("PORT", "-1")]
)
def test_bad_values_exit_with_their_name(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    for command in (["serve"], ["rebuild"], ["token", "--sub", "x"]):
        with pytest.raises(SystemExit) as exited:
            main(command)
        assert isinstance(exited.value.code, str), command
        assert exited.value.code.startswith("rankpulse: invalid configuration")
        assert name in exited.value.code


def test_token_needs_a_secret(clean_env: None) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["token", "--sub", "alice"])
    assert "JWT_SECRET" in str(exited.value.code)


async def test_token_is_accepted_by_the_service(
    make_app: Callable[..., Quart],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    main(["token", "--sub", "bot", "--scope", "matches:write", "--ttl", "60"])
    token = capsys.readouterr().out.strip()
    async with serving(make_app()) as api:
        reply = await api.post("/api/matches", {"player_ids": ["a", "b"]}, token=token)
        assert reply.status == 201
        reply = await api.post(
            "/api/publish", {"room": "matches", "event": "announcement", "data": {}}, token=token
        )
        assert reply.status == 403


async def test_rebuild_command_restores_the_board(
    make_app: Callable[..., Quart], redis_server: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path}/pulse.db"
    app = make_app(redis_url=redis_url, database_url=database_url)
    async with serving(app) as api:
        await api.play("m1", "a", "b", "a")
        await api.play("m2", "c", "a", None)
        await api.play("m3", "d", "b", "b")
        await api.put("/api/players/c", {"name": "Cee"}, token="admin")
        before = await board(api.rt.engine)
    assert [entry.player_id for _, entry in before] == ["a", "b", "c", "d"]

    redis_server.cli("FLUSHALL")  # every key of the service is gone
    done = run_cli(
        ["rebuild"],
        {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "JWT_SECRET": SECRET},
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "rebuilt the board from SQL: 4 players" in done.stdout

    settings: Settings = load_settings(
        redis_url=redis_url, database_url=database_url, jwt_secret=SECRET
    )
    engine = create_engine(settings.redis_url, prefix=settings.redis_prefix)
    await engine.start()
    try:
        assert await board(engine) == before
    finally:
        await engine.stop()


def test_migrate_brings_a_fresh_database_to_the_current_revision(tmp_path: Path) -> None:
    from quart_app.store.migrate import head_revision

    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/pulse.db"}
    before = run_cli(["migrate", "--check"], env, tmp_path)
    assert before.returncode == 1 and "rankpulse migrate" in before.stderr

    done = run_cli(["migrate"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"revision {head_revision()}" in done.stdout

    again = run_cli(["migrate"], env, tmp_path)  # nothing left to do: still fine
    assert again.returncode == 0, again.stderr
    after = run_cli(["migrate", "--check"], env, tmp_path)
    assert after.returncode == 0 and head_revision() in after.stdout


def test_migrate_with_the_database_down_says_so_in_one_line(tmp_path: Path) -> None:
    from .services import free_port

    env = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"}
    done = run_cli(["migrate"], env, tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("rankpulse migrate:") and "Traceback" not in done.stderr
