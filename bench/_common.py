"""What the benchmarks share: real server processes (rankpulse serve, redis-server) on free
ports, pinned with taskset; a lean keep-alive HTTP client; tables and JSON.

Benchmarks are not tests: each is a command that prints a table and writes JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from quart_app.loadtest.wire import ResponseReader, Target, parse_target, request  # noqa: E402

SECRET = "bench-secret-" + "k" * 32
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process `pid` has used so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's children that have ended (and were waited
    for) so far: around one child's run, its own CPU time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pinned(command: list[str], cpus: str | None) -> list[str]:
    if cpus is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", cpus, *command]


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class Redis:
    """A throwaway redis-server (no persistence) on a free port."""

    def __init__(self, cpus: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.process = subprocess.Popen(
            pinned(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self.dir,
                    "--loglevel",
                    "warning",
                ],
                cpus,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: port_open(self.port), 10, f"redis-server on {self.port}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_group(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


class Server:
    """One `python -m quart_app serve` (Hypercorn + uvloop in this one process, so its pid
    is the process holding the connections), in its own session, pinned with taskset."""

    def __init__(
        self,
        workdir: str,
        *,
        redis_url: str | None = None,
        cpus: str | None = "0",
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        entry: tuple[str, ...] = ("-m", "quart_app"),  # or a wrapper script (poll_lag.py)
    ) -> None:
        self.port = free_port()
        self.log_path = os.path.join(workdir, f"server-{self.port}.log")
        environment = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{workdir}/bench.db",
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "warning",
            # measure the service, not its limits (PROTOCOL 3.6): one publisher, one address
            "MAX_CONNECTIONS": "0",  # the idle scenario holds up to 19,000 streams
            "MAX_CONNECTIONS_PER_USER": "0",
            "RATE_LIMIT_WRITES": "0",
            "RATE_LIMIT_PUBLISH": "0",
            **(env or {}),
        }
        environment.pop("PORT", None)
        environment.pop("REDIS_URL", None)
        if redis_url:
            environment["REDIS_URL"] = redis_url
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                pinned([PYTHON, *entry, "serve", "--port", str(self.port), *args], cpus),
                cwd=workdir,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._healthy, 60, f"the server on port {self.port} ({self.log_path})")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{Path(self.log_path).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        stop_group(self.process)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(5)


def token(sub: str, scope: str) -> str:
    from quart_app.loadtest.tokens import mint

    return mint(SECRET, sub, scope)


# --- a lean keep-alive HTTP client ----------------------------------------------------------
class _Http(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = ResponseReader()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for head, body in self.reader.feed(data):
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result((head.status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("closed"))


class Client:
    """One keep-alive connection; one request at a time."""

    def __init__(self, target: Target, token_value: str) -> None:
        self.target = target
        self.headers = {
            "Authorization": f"Bearer {token_value}",
            "Content-Type": "application/json",
        }
        self.protocol: _Http | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Http, "127.0.0.1", self.target.port)
        self.protocol = protocol

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        assert self.protocol is not None and self.protocol.transport is not None
        self.protocol.waiter = asyncio.get_running_loop().create_future()
        self.protocol.transport.write(
            request("POST", self.target, path, self.headers, json.dumps(body).encode())
        )
        return await self.protocol.waiter

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()


def target(url: str) -> Target:
    return parse_target(url)


# --- output ------------------------------------------------------------------------------
def median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(header)] + [[fmt(c) if not isinstance(c, str) else c for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=False))
            )
        )
        if index == 0:
            print("  ".join("-" * w for w in widths))


def run_benchmark(main: Any, args: Any) -> None:
    """Run `main(args)` on uvloop where installed (as the server runs), write its JSON."""
    try:
        import uvloop

        report = uvloop.run(main(args))
    except ImportError:
        report = asyncio.run(main(args))
    write_json(args.json, report)


def write_json(path: str, data: Any) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"wrote {out}")


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


async def seed_sqlite(workdir: str, players: int, code: str | None = None) -> float:
    """Migrate a fresh SQLite file `<workdir>/bench.db` (with the service code at `code`, or
    this checkout's) and seed `players` players in bulk; returns the seconds seeding took."""
    from quart_app.store.database import Store
    from quart_app.store.seed import seed_players

    database_url = f"sqlite:///{workdir}/bench.db"
    env = {**os.environ, "DATABASE_URL": database_url}
    if code is not None:
        env["PYTHONPATH"] = code
    subprocess.run(
        [PYTHON, "-m", "quart_app", "migrate"],
        cwd=workdir,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    store = Store(database_url)
    await store.db.connect()
    try:
        started = time.perf_counter()
        await seed_players(store, players)
        return time.perf_counter() - started
    finally:
        await store.db.disconnect()


class Postgres:
    """A throwaway PostgreSQL cluster (initdb in a temp dir; run as the postgres user when
    this is root, since postgres refuses root), pinned with taskset. fsync stays on: the
    write path's figures include the flush a commit costs."""

    def __init__(self, cpus: str | None = None) -> None:
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not versions:
            raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = versions[-1].parent
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-pg-")
        as_postgres = os.geteuid() == 0
        user: dict[str, Any] = {"user": "postgres", "group": "postgres"} if as_postgres else {}
        if as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        data = os.path.join(self.dir, "data")
        subprocess.run(
            [str(self.bin / "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            cwd=self.dir,
            **user,
        )
        command = [str(self.bin / "postgres"), "-D", data, "-p", str(self.port), "-k", self.dir]
        command += ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]
        self.process = subprocess.Popen(
            pinned(command, cpus),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.dir,
            start_new_session=True,
            **user,
        )
        wait_until(self._accepting, 60, f"postgres on {self.port}")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _accepting(self) -> bool:
        ready = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
        )
        return ready.returncode == 0

    def stop(self) -> None:
        stop_group(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


async def seed_database(
    database_url: str, workdir: str, players: int, code: str | None = None
) -> float:
    """Migrate the (empty) database at `database_url` with the service code at `code` and
    seed `players` players in bulk; returns the seconds seeding took."""
    from quart_app.store.database import Store
    from quart_app.store.seed import seed_players

    env = {**os.environ, "DATABASE_URL": database_url}
    if code is not None:
        env["PYTHONPATH"] = code
    subprocess.run(
        [PYTHON, "-m", "quart_app", "migrate"],
        cwd=workdir,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    store = Store(database_url)
    if not store.is_sqlite:
        from databases import Database

        # One statement inserts every player: past the service's 5 s statement bound.
        store.db = Database(database_url)
    await store.db.connect()
    try:
        started = time.perf_counter()
        await seed_players(store, players)
        if not store.is_sqlite:
            await store.db.execute("ANALYZE")
        return time.perf_counter() - started
    finally:
        await store.db.disconnect()
