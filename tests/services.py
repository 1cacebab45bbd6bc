"""Real services for tests: redis-server, PostgreSQL and Hypercorn processes on free ports.

A missing tool fails the test under CI=true (the suite installs everything there); on a
developer's machine it skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_tool(name: str, *candidates: str) -> str:
    for candidate in (name, *candidates):
        path = shutil.which(candidate) or (candidate if os.path.exists(candidate) else None)
        if path:
            return path
    message = f"{name} is not installed (scripts/test installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class RedisServer:
    """A throwaway redis-server on a free port, no persistence."""

    def __init__(self) -> None:
        self.binary = require_tool("redis-server")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="lrp-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port), 10, f"redis-server on {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def cli(self, *args: str) -> str:
        cli = require_tool("redis-cli")
        out = subprocess.run([cli, "-p", str(self.port), *args], capture_output=True, check=True)
        return out.stdout.decode().strip()


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temp dir (initdb + postgres as the postgres user
    when running as root, since postgres refuses to run as root)."""

    def __init__(self) -> None:
        bindir = Path("/usr/lib/postgresql")
        versions = sorted(bindir.glob("*/bin/initdb")) if bindir.exists() else []
        initdb = str(versions[-1]) if versions else require_tool("initdb")
        self.bin = Path(initdb).parent
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="lrp-pg-")
        self.process: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else args

    def start(self) -> None:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        data = os.path.join(self.dir, "data")
        subprocess.run(self._run([str(self.bin / "initdb"), "-D", data, "-U", "postgres",
                                  "--auth=trust", "-E", "UTF8"]),
                       check=True, capture_output=True)
        self.process = subprocess.Popen(
            self._run([str(self.bin / "postgres"), "-D", data, "-p", str(self.port),
                       "-k", self.dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port), 30, f"postgres on {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(20)
        shutil.rmtree(self.dir, ignore_errors=True)
