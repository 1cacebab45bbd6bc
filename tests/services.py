"""Real services for tests: redis-server, PostgreSQL and Hypercorn processes on free ports.

A missing tool fails the test under CI=true (the suite installs everything there); on a
developer's machine it skips with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
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


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `predicate` until it is truthy; fail naming `what` after `timeout` seconds, with the
    last value it returned. An exception from `predicate` is not retried: it propagates (a
    server that exited says so at once instead of after the timeout)."""
    deadline = time.monotonic() + timeout
    value: object = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class RedisServer:
    """A throwaway redis-server on a free port, no persistence unless `appendonly` (then an
    AOF fsynced at every write, so a kill -9 loses nothing)."""

    def __init__(self, appendonly: bool = False) -> None:
        self.appendonly = appendonly
        self.binary = require_tool("redis-server")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="lrp-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "always",
                "--dir",
                self.dir,
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port), 10, f"redis-server on {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown save."""
        if self.process and self.process.poll() is None:
            self.process.kill()
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

    def _user(self) -> dict[str, str]:
        # Popen(user=...) makes the child itself the postgres process: a signal sent to it
        # reaches postgres (runuser in between swallows SIGINT, so the server never stopped).
        return {"user": "postgres", "group": "postgres"} if self._as_postgres else {}

    def start(self) -> None:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        data = os.path.join(self.dir, "data")
        subprocess.run(
            [str(self.bin / "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            cwd=self.dir,
            **self._user(),
        )
        self.process = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                data,
                "-p",
                str(self.port),
                "-k",
                self.dir,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.dir,
            **self._user(),
        )
        # An open port is not enough: until recovery ends, connections get "the database
        # system is starting up". pg_isready says 0 only once they are accepted.
        wait_until(self._accepting, 30, f"postgres on {self.port}")

    def _accepting(self) -> bool:
        ready = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
        )
        return ready.returncode == 0

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(20)
        shutil.rmtree(self.dir, ignore_errors=True)


class LiveServer:
    """One real instance: `python -m quart_app serve` (Hypercorn + uvloop) in its own
    process group, so a test can kill -9 it like a crash."""

    def __init__(
        self,
        workdir: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.port = port or free_port()
        self.args = args
        self.workdir = workdir
        self.env = {
            "DATABASE_URL": f"sqlite:///{workdir}/rankpulse.db",
            "LOG_LEVEL": "warning",
            # PROTOCOL 3.6 limits off unless a test sets them (see conftest.make_app)
            "MAX_CONNECTIONS_PER_USER": "0",
            "RATE_LIMIT_WRITES": "0",
            "RATE_LIMIT_PUBLISH": "0",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(workdir, f"server-{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        env = {**os.environ, **self.env}
        env.pop("PORT", None)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "quart_app", "serve", "--port", str(self.port), *self.args],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._healthy, 30, f"the server on port {self.port} ({self.log_path})")
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"server exited: {self.log()}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def rss_kb(self) -> int:
        """Resident memory of the server process (one process: serve runs Hypercorn inline)."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as status:
            line = next(line for line in status if line.startswith("VmRSS:"))
        return int(line.split()[1])

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()[-5000:]

    def token(self, sub: str, scope: str = "", ttl: int = 3600) -> str:
        """A token this server accepts: minted with its JWT_SECRET, or from its dev endpoint."""
        secret = self.env.get("JWT_SECRET")
        if secret:
            from quart_app.auth import Authenticator
            from quart_app.config import load_settings

            return Authenticator(load_settings(jwt_secret=secret)).issue(sub, scope, ttl)
        body = json.dumps({"sub": sub, "scope": scope, "ttl_seconds": ttl}).encode()
        request = urllib.request.Request(
            self.url + "/api/dev/token", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(json.load(response)["access_token"])

    def stop(self) -> None:
        """A graceful stop (SIGTERM to the group)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """A crash: SIGKILL to the whole process group, no cleanup."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
