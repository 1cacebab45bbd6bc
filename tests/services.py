"""Real services for tests: redis-server, PostgreSQL and Hypercorn processes on free ports.

A missing tool fails the test under CI=true (the suite installs everything there); on a
developer's machine it skips with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
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
from typing import BinaryIO

import pytest

# Ports are drawn below the kernel's ephemeral range: every outgoing connection on the machine
# and every bind to port 0 take theirs from that range, so one could take the port of a server a
# test stopped to restart (seen: a restarted redis-server could not bind, and the test talked to
# another worker's). Drawn by a generator of our own: pytest-randomly reseeds `random` per test.
_PORTS = random.Random(int.from_bytes(os.urandom(8), "big"))
_LOWEST_PORT = 20000
_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as bounds:
            return int(bounds.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(companion: int = 0) -> int:
    """A port nothing listens on, outside the ephemeral range, and not handed out before by
    this process (a server given it may not have bound it yet: a fixture picks several first).
    With `companion`, port + companion is all that too (a Redis Cluster node's bus port)."""
    highest = _ephemeral_low() - 1 - companion
    lowest = _LOWEST_PORT - companion
    if highest - lowest < 2000:
        raise RuntimeError(
            f"too few ports below the ephemeral range ({_ephemeral_low()}): "
            "see /proc/sys/net/ipv4/ip_local_port_range"
        )
    for _ in range(10_000):
        port = _PORTS.randint(lowest, highest)
        pair = {port, port + companion}
        if pair & _HANDED_OUT or not all(_bindable(p) for p in pair):
            continue
        _HANDED_OUT.update(pair)
        return port
    raise RuntimeError("no free port found below the ephemeral range")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


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


RespReply = str | int | None | list["RespReply"]


def redis_command(port: int, *args: str, timeout: float = 10.0) -> RespReply:
    """One command to the redis-server on `port`, over a plain socket: what the fixtures send
    before every test (FLUSHALL), where spawning redis-cli cost 25 ms a call on a loaded
    machine (1 ms this way). An error reply raises RuntimeError."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        with sock.makefile("rb") as replies:
            return _read_reply(replies)


def _read_reply(replies: BinaryIO) -> RespReply:
    line = replies.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis closed the connection mid-reply")
    kind, rest = line[:1], line[1:-2].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(f"redis: {rest}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        return None if rest == "-1" else replies.read(int(rest) + 2)[:-2].decode()
    if kind == b"*":
        return None if rest == "-1" else [_read_reply(replies) for _ in range(int(rest))]
    raise ValueError(f"not a RESP2 reply: {line!r}")


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
        wait_until(self._answers_as_itself, 10, f"redis-server on {self.port}")

    def _answers_as_itself(self) -> bool:
        """Ready when the server on the port is this process: after a restart the port may have
        been taken meanwhile, and then this one exits instead of listening."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"redis-server on {self.port} did not start (exit code "
                f"{self.process.returncode}; is the port taken?)"
            )
        try:
            info = str(redis_command(self.port, "INFO", "server", timeout=0.5))
        except (OSError, RuntimeError):  # not listening yet, or loading
            return False
        return f"process_id:{self.process.pid}" in info.splitlines()

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
        # --no-sync: a throwaway cluster (the server runs with fsync=off too); initdb's final
        # sync of 40 MB took 1-2 s of a start on a loaded machine.
        initdb = [str(self.bin / "initdb"), "-D", data, "-U", "postgres", "--auth=trust"]
        subprocess.run(
            [*initdb, "-E", "UTF8", "--no-sync"],
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

    def sigterm(self) -> float:
        """SIGTERM to the group, without waiting (a drain under test); returns when it was sent."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        return time.monotonic()

    async def exit_time(self, since: float, limit: float) -> float:
        """Seconds from `since` until the process exited (fails after `limit`)."""
        assert self.process is not None
        deadline = since + limit
        while self.process.poll() is None:
            assert time.monotonic() < deadline, f"still running {limit:g} s after SIGTERM"
            await asyncio.sleep(0.05)
        return time.monotonic() - since

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


SENTINEL_READY_SECONDS = 60.0  # inside the tests' 120 s pytest-timeout, which counts set-up
SENTINEL_NUDGE_SECONDS = 10.0


class _AllOrNothing:
    """A set of processes whose `start()` either starts them all or leaves nothing running: a
    set that fails half-way (a port taken, a timeout) stops what it started, as a test whose
    fixture failed never calls stop()."""

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class SentinelSet(_AllOrNothing):
    """A master, one replica and three sentinels (quorum 2, down-after 1 s) on free ports:
    `url` is the REDIS_URL of the service; `kill_master()` is a crash (SIGKILL).

    `start()` returns once the set can fail over: the replica in sync, and every sentinel
    knowing the replica and its two peers. (Killed earlier, a master could not be failed over:
    a sentinel learns replicas from the master's INFO, every 10 s by default, here every
    second, and its peers from hello messages, every 2 s.) The replica authenticates as its
    own ACL user, so that `cut_replication()` can stop it following the master while it stays
    up for the sentinels: the stale replica that a failover may promote."""

    service = "lrp"
    _replication_user = ("replica", "replica-secret")

    def __init__(self) -> None:
        self.binary = require_tool("redis-server")
        self.cli_binary = require_tool("redis-cli")
        self.master = RedisServer()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.dir = tempfile.mkdtemp(prefix="lrp-sentinel-")
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def _spawn(self, *args: str) -> None:
        process = subprocess.Popen(
            [self.binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.processes.append(process)

    def cli(self, port: int, *args: str) -> str:
        out = subprocess.run(
            [self.cli_binary, "-p", str(port), *args], capture_output=True, check=True, timeout=10
        )
        return out.stdout.decode().strip()

    def _start(self) -> None:
        self.master.start()
        user, secret = self._replication_user
        # the first sync at once (Redis 7 waits 5 s for more replicas to share a diskless one)
        self.cli(self.master.port, "CONFIG", "SET", "repl-diskless-sync-delay", "0")
        self.cli(self.master.port, "ACL", "SETUSER", user, "on", f">{secret}",
                 "+psync", "+replconf", "+ping")  # fmt: skip
        self._spawn(
            "--port", str(self.replica_port), "--bind", "127.0.0.1", "--save", "",
            "--replicaof", "127.0.0.1", str(self.master.port), "--dir", self.dir,
            "--masteruser", user, "--masterauth", secret,
        )  # fmt: skip
        wait_until(lambda: port_open(self.replica_port), 10, "the replica")
        for port in self.sentinel_ports:
            conf = Path(self.dir) / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 5000\n"
            )
            self._spawn(str(conf), "--sentinel")
        for port in self.sentinel_ports:
            wait_until(lambda port=port: port_open(port), 10, f"sentinel on {port}")  # type: ignore[misc]
            # The replica is known one INFO of the master after it synced: ask every second,
            # not every 10 s, so a replica that synced just after a sentinel's first INFO
            # does not cost the set-up 10 s.
            redis_command(port, "SENTINEL", "DEBUG", "info-period", "1000")
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Until `ready()`: about 2 s here, loaded or not, yet a CI run timed out after 60 s
        (cause not caught). So a sentinel still missing the replica or a peer is reset every
        SENTINEL_NUDGE_SECONDS (SENTINEL RESET: it rediscovers both from the master's INFO
        and the hello messages, from scratch), and a timeout says what was missing."""
        deadline = time.monotonic() + SENTINEL_READY_SECONDS
        nudge_at = time.monotonic() + SENTINEL_NUDGE_SECONDS
        while (missing := self.not_ready()) is not None:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(
                    f"timed out after {SENTINEL_READY_SECONDS}s waiting for the replica in sync, "
                    f"known to every sentinel with its peers: {missing}"
                )
            if now > nudge_at:
                nudge_at = now + SENTINEL_NUDGE_SECONDS
                for port in self._sentinels_missing_something():
                    redis_command(port, "SENTINEL", "RESET", self.service)
            time.sleep(0.05)

    def _master_state(self, port: int) -> dict[str, str]:
        """What the sentinel on `port` knows of the master (SENTINEL MASTER's fields)."""
        reply = redis_command(port, "SENTINEL", "MASTER", self.service)
        assert isinstance(reply, list)
        return {str(k): str(v) for k, v in zip(reply[::2], reply[1::2], strict=False)}

    def _sentinels_missing_something(self) -> list[int]:
        return [
            port
            for port in self.sentinel_ports
            if int(self._master_state(port).get("num-slaves", 0)) < 1
            or int(self._master_state(port).get("num-other-sentinels", 0)) < 2
        ]

    def replica_in_sync(self) -> bool:
        info = redis_command(self.replica_port, "INFO", "replication")
        return "master_link_status:up" in str(info)

    def not_ready(self) -> str | None:
        """None once the replica is in sync and every sentinel knows it and the two other
        sentinels; else what is missing. A process of the set that exited (a port taken
        between free_port() and its start) fails at once, by name."""
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args} exited with {process.returncode}")
        missing = [] if self.replica_in_sync() else ["the replica's link to the master is down"]
        for port in self.sentinel_ports:
            state = self._master_state(port)
            slaves, peers = state.get("num-slaves", "0"), state.get("num-other-sentinels", "0")
            if int(slaves) < 1 or int(peers) < 2:
                missing.append(f"sentinel {port}: {slaves} replicas, {peers} peers")
        return "; ".join(missing) or None

    def ready(self) -> bool:
        """The replica in sync; every sentinel knows it and the two other sentinels."""
        return self.not_ready() is None

    def cut_replication(self) -> None:
        """The replica stops following the master (its user is deleted, which drops its link
        and refuses it back) but stays up: writes from now on reach the master only."""
        self.cli(self.master.port, "ACL", "DELUSER", self._replication_user[0])
        wait_until(lambda: not self.replica_in_sync(), 10, "the replication link down")

    def master_port(self) -> int:
        """The master's port as the first sentinel sees it now."""
        out = self.cli(self.sentinel_ports[0], "SENTINEL", "get-master-addr-by-name", self.service)
        return int(out.split()[1])

    def wait_for_new_master(self, old_port: int, timeout: float = 30) -> int:
        """Wait until every sentinel names a master other than `old_port` (the leader of a
        failover switches first; the others follow its hello messages, up to 2 s later)."""

        def switched() -> int | None:
            ports = {
                int(self.cli(port, "SENTINEL", "get-master-addr-by-name", self.service).split()[1])
                for port in self.sentinel_ports
            }
            return ports.pop() if len(ports) == 1 and old_port not in ports else None

        wait_until(switched, timeout, f"every sentinel naming a master other than {old_port}")
        new_port = switched()
        assert new_port is not None
        return new_port

    def kill_master(self) -> None:
        self.master.kill()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        self.master.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisClusterSet(_AllOrNothing):
    """A Redis Cluster of three masters, each with one replica (`replicas=1`), on free ports,
    cluster-node-timeout 1000 ms so a dead master's replica is promoted within a few seconds:
    `url` is the REDIS_URL of the service; `kill_master_of(key)` is a crash (SIGKILL) of the
    master that serves that key's slot."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        self.binary = require_tool("redis-server")
        self.cli_binary = require_tool("redis-cli")
        self.ports = [self._free_node_port() for _ in range(masters * (1 + replicas))]
        self.replicas = replicas
        self.dir = tempfile.mkdtemp(prefix="lrp-cluster-")
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @staticmethod
    def _free_node_port() -> int:
        """A free port whose cluster bus port (port + 10000) is free too."""
        return free_port(companion=10000)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:3])

    def _start(self) -> None:
        for port in self.ports:
            node_dir = Path(self.dir) / str(port)
            node_dir.mkdir()
            self.processes[port] = subprocess.Popen(
                [
                    self.binary, "--port", str(port), "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no",
                    "--dir", str(node_dir), "--loglevel", "warning",
                ],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        for port in self.ports:
            wait_until(lambda port=port: port_open(port), 10, f"cluster node on {port}")  # type: ignore[misc]
        try:
            created = subprocess.run(
                [
                    self.cli_binary, "--cluster", "create",
                    *(f"127.0.0.1:{port}" for port in self.ports),
                    "--cluster-replicas", str(self.replicas), "--cluster-yes",
                ],
                capture_output=True, timeout=60,
            )  # fmt: skip
            if created.returncode:
                output = (created.stdout + created.stderr).decode()
                raise RuntimeError(f"redis-cli --cluster create: {output}")
            wait_until(self.healthy, 30, "cluster_state:ok on every node, every replica in sync")
        except BaseException:
            self.stop()
            raise

    def cli(self, port: int, *args: str) -> str:
        out = subprocess.run(
            [self.cli_binary, "-p", str(port), *args], capture_output=True, check=True, timeout=10
        )
        return out.stdout.decode().strip()

    def alive(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def healthy(self) -> bool:
        """cluster_state:ok on every live node, and each master with its replicas attached."""
        for port in self.alive():
            if "cluster_state:ok" not in self.cli(port, "CLUSTER", "INFO"):
                return False
        masters = [port for port in self.alive() if self._role(port) == "master"]
        return all(self._connected_replicas(port) >= self.replicas for port in masters)

    def _role(self, port: int) -> str:
        return self.cli(port, "ROLE").split()[0]

    def _connected_replicas(self, port: int) -> int:
        info = self.cli(port, "INFO", "replication")
        return sum(1 for line in info.splitlines() if line.startswith("slave") and "online" in line)

    def master_of(self, key: str) -> int:
        """The port of the master serving `key`'s slot, as the live nodes see it now."""
        slot = int(self.cli(self.alive()[0], "CLUSTER", "KEYSLOT", key))
        for port in self.alive():
            for line in self.cli(port, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "myself" in fields[2] and "master" in fields[2]:
                    for span in fields[8:]:
                        low, _, high = span.partition("-")
                        if low.isdigit() and int(low) <= slot <= int(high or low):
                            return port
        raise LookupError(f"no live master serves slot {slot}")

    def flush(self) -> None:
        """FLUSHALL on every live master (the replicas follow). Before every cluster test:
        over plain sockets, not 9 redis-cli processes (300 ms on a loaded machine)."""
        for port in self.alive():
            role = redis_command(port, "ROLE")
            if isinstance(role, list) and role[0] == "master":
                redis_command(port, "FLUSHALL")

    def node_id(self, port: int) -> str:
        return self.cli(port, "CLUSTER", "MYID")

    def move_slot_of(self, key: str, source: int, target: int) -> int:
        """Reshard the slot of `key` from master `source` to master `target`, keys and all, as
        `redis-cli --cluster reshard` does (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT
        NODE on every master). Returns the slot."""
        slot = self.cli(source, "CLUSTER", "KEYSLOT", key)
        source_id, target_id = self.node_id(source), self.node_id(target)
        self.cli(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        self.cli(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := self.cli(source, "CLUSTER", "GETKEYSINSLOT", slot, "100").split():
            self.cli(source, "MIGRATE", "127.0.0.1", str(target), "", "0", "5000", "KEYS", *keys)
        for port in self.alive():
            if self._role(port) == "master":
                self.cli(port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return int(slot)

    def promoted_after(self, key: str, killed: int, timeout: float = 60) -> int:
        """Wait until a live master other than `killed` serves `key`'s slot (the replica's
        promotion takes the cluster's node timeout, and nothing else a test sees implies it:
        a result is answered 2xx while the engine is down); its port."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                port = self.master_of(key)
                if port != killed:
                    return port
            except LookupError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no replica promoted for {key} within {timeout} s")
            time.sleep(0.2)

    def kill_master_of(self, key: str) -> int:
        port = self.master_of(key)
        process = self.processes[port]
        process.kill()
        process.wait(10)
        return port

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
