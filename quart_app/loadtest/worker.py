"""A generator process: its own uvloop holding its share of the subscribers.

It talks to the coordinator over a multiprocessing Pipe, one phase at a time:
connect -> (status)* -> start -> drain -> close. Replies are plain dicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from . import sysinfo
from .clients import KINDS, Client, Plan, Sink, connect, error_name
from .wire import Target, marker_pattern


@dataclass(frozen=True, slots=True)
class ClientSpec:
    kind: str  # sse | poll | ws
    index: int  # global index of the client within its kind
    target: int  # index into the instance list
    token: str | None
    source_ip: str | None


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    index: int
    targets: list[Target]
    addresses: list[str]
    room: str
    run: str
    top: int | None
    publishers: int
    poll_timeout: int
    connect_concurrency: int
    connect_timeout: float
    connect_retries: int
    sample_every: dict[str, int]
    cpus: set[int] | None
    specs: list[ClientSpec]


def main(conn: Connection, config: WorkerConfig) -> None:
    """Process entry point (multiprocessing, spawn)."""
    sysinfo.pin(config.cpus)
    nofile = sysinfo.raise_nofile()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_Worker(conn, config, nofile).run())
        return
    uvloop.run(_Worker(conn, config, nofile).run())


class _Worker:
    def __init__(self, conn: Connection, config: WorkerConfig, nofile: int) -> None:
        self.conn = conn
        self.config = config
        self.nofile = nofile
        self.clients: list[tuple[ClientSpec, Client]] = []
        self.failures: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
        self.retries: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
        self.connect_times: dict[str, list[float]] = {kind: [] for kind in KINDS}
        self.sinks: dict[str, Sink] = {}
        self.marks: dict[str, tuple[float, float]] = {}
        self.pattern = marker_pattern(config.run)

    def mark(self, name: str) -> None:
        self.marks[name] = (time.monotonic(), sysinfo.cpu_seconds())

    def cpu_between(self, start: str, end: str) -> dict[str, float]:
        (wall0, cpu0), (wall1, cpu1) = self.marks[start], self.marks[end]
        wall = max(wall1 - wall0, 1e-9)
        return {"wall_s": wall, "cpu_s": cpu1 - cpu0, "cpu_percent": 100 * (cpu1 - cpu0) / wall}

    async def _receive(self) -> Any:
        # A thread waits on the pipe: a loop reader would make the pipe non-blocking, and a
        # large reply would then fail half-written.
        try:
            return await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)
        except (EOFError, OSError):
            return ("close",)

    async def run(self) -> None:
        self.conn.send({"hello": os.getpid(), "nofile": self.nofile})
        try:
            while True:
                command = await self._receive()
                name = command[0]
                if name == "connect":
                    self.conn.send(await self.connect_all())
                elif name == "status":
                    self.conn.send(self.status())
                elif name == "start":
                    self.mark("start")
                    self.conn.send({"started": True})
                elif name == "drain":
                    _, published, failed, drain_timeout = command
                    await self.drain(published - len(failed), drain_timeout)
                    self.mark("end")
                    self.conn.send(self.result(published, frozenset(failed)))
                elif name == "close":
                    break
        finally:
            for _, client in self.clients:
                client.close()
            await asyncio.sleep(0.05)
            with contextlib.suppress(OSError):
                self.conn.send({"closed": True})

    # connect -------------------------------------------------------------------------------
    def _plan(self, spec: ClientSpec) -> Plan:
        config = self.config
        return Plan(
            config.targets[spec.target],
            config.addresses[spec.target],
            config.room,
            spec.token,
            self.pattern,
            config.publishers,
            config.top,
            config.poll_timeout,
            config.run,
        )

    async def connect_all(self) -> dict[str, Any]:
        config = self.config
        self.sinks = {kind: Sink(config.sample_every.get(kind, 1)) for kind in KINDS}
        gate = asyncio.Semaphore(max(1, config.connect_concurrency))
        self.mark("connect")

        async def one(spec: ClientSpec) -> None:
            started = 0.0
            for attempt in range(config.connect_retries + 1):
                async with gate:
                    client = KINDS[spec.kind](self._plan(spec), self.sinks[spec.kind])
                    started = started or time.monotonic()
                    client.started = started
                    try:
                        await asyncio.wait_for(self._open(client, spec), config.connect_timeout)
                    except Exception as exc:  # noqa: BLE001 - every failure is counted by name
                        client.close()
                        reason = error_name(exc)
                        # A refusal by status (401, 403, 400...) will not change on a retry.
                        if attempt == config.connect_retries or reason.startswith("HTTP 4"):
                            self.failures[spec.kind][reason] += 1
                            return
                        self.retries[spec.kind][reason] += 1
                    else:
                        # Connect time includes the retries: what a reconnecting client sees.
                        self.connect_times[spec.kind].append(client.ready_at - started)
                        self.clients.append((spec, client))
                        return
                await asyncio.sleep(0.25 * (attempt + 1) * (1 + random.random()))

        await asyncio.gather(*(one(spec) for spec in config.specs))
        self.mark("connected")
        return {
            "connected": {kind: len(times) for kind, times in self.connect_times.items()},
            "failures": {kind: dict(counter) for kind, counter in self.failures.items()},
            "retries": {kind: dict(counter) for kind, counter in self.retries.items()},
            "connect_times": self.connect_times,
            "cpu": self.cpu_between("connect", "connected"),
        }

    async def _open(self, client: Client, spec: ClientSpec) -> None:
        await connect(client, spec.source_ip)
        await client.ready

    def status(self) -> dict[str, Any]:
        held: Counter[str] = Counter()
        ended: Counter[str] = Counter()
        for _, client in self.clients:
            if client.open and client.ended is None:
                held[client.kind] += 1
            else:
                ended[f"{client.kind}: {client.ended or 'closed'}"] += 1
        return {"held": dict(held), "ended": dict(ended)}

    # deliver -------------------------------------------------------------------------------
    async def drain(self, expected: int, idle_timeout: float) -> None:
        """Wait until every open client has `expected` events, or nothing arrived anywhere
        for `idle_timeout` seconds."""
        last_total, last_progress = -1, time.monotonic()
        while True:
            total, waiting = 0, False
            for _, client in self.clients:
                received = client.tracker.received
                total += received
                if received < expected and client.open and client.ended is None:
                    waiting = True
            if not waiting:
                return
            now = time.monotonic()
            if total != last_total:
                last_total, last_progress = total, now
            elif now - last_progress > idle_timeout:
                return
            await asyncio.sleep(0.02)

    def result(self, published: int, failed: frozenset[int]) -> dict[str, Any]:
        kinds: dict[str, dict[str, Any]] = {}
        for kind in KINDS:
            kinds[kind] = {
                "clients": 0,
                "held": 0,
                "delivered": 0,
                "missing": 0,
                "duplicated": 0,
                "out_of_order": 0,
                "unexpected": 0,
                "clients_missing": 0,
                "clients_duplicated": 0,
                "clients_out_of_order": 0,
                "worst": None,
                "max_latency_ns": 0,
                "first_ns": 0,
                "last_ns": 0,
                "other": 0,
                "protocol_errors": 0,
                "ended": Counter(),
                "resets": Counter(),
                "samples": self.sinks[kind].samples if self.sinks else [],
            }
        for spec, client in self.clients:
            row = kinds[client.kind]
            verdict = client.tracker.verdict(published, failed)
            row["clients"] += 1
            if client.open and client.ended is None:
                row["held"] += 1
            else:
                row["ended"][client.ended or "closed"] += 1
            row["delivered"] += verdict.received
            row["missing"] += verdict.missing
            row["duplicated"] += verdict.duplicated
            row["out_of_order"] += verdict.out_of_order
            row["unexpected"] += verdict.unexpected
            row["clients_missing"] += verdict.missing > 0
            row["clients_duplicated"] += verdict.duplicated > 0
            row["clients_out_of_order"] += verdict.out_of_order > 0
            badness = (
                verdict.missing + verdict.duplicated + verdict.out_of_order + verdict.unexpected
            )
            if badness and (row["worst"] is None or badness > row["worst"]["badness"]):
                row["worst"] = {
                    "client": f"{client.kind}#{spec.index}",
                    "badness": badness,
                    "missing": verdict.missing,
                    "duplicated": verdict.duplicated,
                    "out_of_order": verdict.out_of_order,
                    "unexpected": verdict.unexpected,
                    "received": verdict.received,
                    "ended": client.ended,
                    "resets": client.resets,
                }
            tracker = client.tracker
            row["max_latency_ns"] = max(row["max_latency_ns"], tracker.max_latency_ns)
            if tracker.first_ns and (not row["first_ns"] or tracker.first_ns < row["first_ns"]):
                row["first_ns"] = tracker.first_ns
            row["last_ns"] = max(row["last_ns"], tracker.last_ns)
            row["other"] += client.other
            row["protocol_errors"] += client.protocol_errors
            for reset in client.resets:
                row["resets"][reset] += 1
        for row in kinds.values():
            row["ended"] = dict(row["ended"])
            row["resets"] = dict(row["resets"])
        return {"kinds": kinds, "cpu": self.cpu_between("start", "end")}
