"""The coordinator: plans the run, starts the generator processes, publishes, collects.

Phases: spawn workers -> server RSS before -> connect (bounded concurrency) -> settle ->
server RSS connected -> hold (optional) -> publish (burst or rate) -> drain -> report.
The coordinator itself publishes; the subscribers live in the worker processes.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import secrets
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from . import report, sysinfo
from .publisher import PublishResult, publish
from .tokens import Tokens
from .wire import Target, parse_target
from .worker import ClientSpec, WorkerConfig
from .worker import main as worker_main

KINDS = ("sse", "poll", "ws")


@dataclass(slots=True)
class Options:
    urls: list[str]
    sse: int = 0
    poll: int = 0
    ws: int = 0
    room: str | None = None
    top: int | None = None
    rate: float | None = None
    duration: float = 10.0
    burst: int | None = None
    publishers: int = 1
    window: int = 64
    publish_url: str | None = None
    token: str | None = None
    publish_token: str | None = None
    jwt_secret: str | None = None
    jwt_algorithm: str = "HS256"
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    anonymous: bool = False
    identities: int = 100
    processes: int = 1
    source_ips: list[str] = field(default_factory=list)
    cpus: set[int] | None = None
    server_pids: list[int] = field(default_factory=list)
    connect_concurrency: int = 100
    connect_timeout: float = 30.0
    connect_retries: int = 2
    settle: float = 1.0
    hold: float = 0.0
    drain_timeout: float = 10.0
    poll_timeout: int = 25
    sample_budget: int = 2_000_000
    json_path: str | None = None
    quiet: bool = False
    label: str | None = None

    @property
    def planned_events(self) -> int:
        if self.burst is not None:
            return self.burst
        if self.rate is not None:
            return max(1, round(self.rate * self.duration))
        return 0


class _Workers:
    """The generator processes and their pipes."""

    def __init__(self, configs: list[WorkerConfig]) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.processes: list[Any] = []
        for config in configs:
            parent, child = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(child, config),
                daemon=True,
                name=f"loadtest-worker-{config.index}",
            )
            process.start()
            child.close()
            self.conns.append(parent)
            self.processes.append(process)

    @staticmethod
    async def _receive(conn: Connection) -> dict[str, Any]:
        # A thread waits on each pipe (a loop reader would make the pipe non-blocking).
        try:
            answer: dict[str, Any] = await asyncio.get_running_loop().run_in_executor(
                None, conn.recv
            )
        except (EOFError, OSError) as exc:
            return {"dead": str(exc) or type(exc).__name__}
        return answer

    async def ask(self, *command: Any, timeout: float | None = None) -> list[dict[str, Any]]:
        for conn in self.conns:
            conn.send(command)
        return await self.collect(timeout)

    async def collect(self, timeout: float | None = None) -> list[dict[str, Any]]:
        answers = await asyncio.wait_for(
            asyncio.gather(*(self._receive(conn) for conn in self.conns)), timeout
        )
        for answer in answers:
            if "dead" in answer:
                raise RuntimeError(f"a generator process died: {answer['dead']}")
        return list(answers)

    def stop(self) -> None:
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)


def _specs(options: Options, targets: list[Target], tokens: Tokens) -> list[ClientSpec]:
    specs: list[ClientSpec] = []
    counter = 0
    for kind in KINDS:
        for index in range(getattr(options, kind)):
            target = counter % len(targets)
            source = (
                options.source_ips[counter % len(options.source_ips)]
                if options.source_ips
                else None
            )
            specs.append(ClientSpec(kind, index, target, tokens.subscriber(target, index), source))
            counter += 1
    return specs


def _sample_every(options: Options) -> dict[str, int]:
    """Keep at most about `sample_budget` latency samples per transport."""
    events = options.planned_events
    return {
        kind: max(1, math.ceil(events * getattr(options, kind) / options.sample_budget))
        for kind in KINDS
    }


async def run(options: Options) -> dict[str, Any]:
    """Run the load test; return the report (see report.build)."""
    if not options.urls:
        raise SystemExit("loadtest: give at least one --url")
    sysinfo.pin(options.cpus)
    nofile = sysinfo.raise_nofile()
    targets = [parse_target(url) for url in options.urls]
    addresses = [target.resolve() for target in targets]
    publish_target = parse_target(options.publish_url) if options.publish_url else targets[0]
    run_id = secrets.token_hex(4)
    room = options.room or f"match:loadtest-{run_id}"
    events = options.planned_events
    tokens = Tokens(
        targets,
        options.identities,
        token=options.token,
        publish_token=options.publish_token,
        secret=options.jwt_secret,
        algorithm=options.jwt_algorithm,
        audience=options.jwt_audience,
        issuer=options.jwt_issuer,
        anonymous=options.anonymous,
        publish_target=publish_target,
    )
    if events and not tokens.publisher:
        raise SystemExit(
            "loadtest: publishing needs an admin token (--publish-token, "
            "--token with scope admin, or --jwt-secret)"
        )
    specs = _specs(options, targets, tokens)
    processes = max(1, min(options.processes, len(specs) or 1))
    per_worker = math.ceil(options.connect_concurrency / processes)
    configs = [
        WorkerConfig(
            index=i,
            targets=targets,
            addresses=addresses,
            room=room,
            run=run_id,
            top=options.top,
            publishers=options.publishers,
            poll_timeout=options.poll_timeout,
            connect_concurrency=per_worker,
            connect_timeout=options.connect_timeout,
            connect_retries=options.connect_retries,
            sample_every=_sample_every(options),
            cpus=options.cpus,
            specs=specs[i::processes],
        )
        for i in range(processes)
    ]
    probe = sysinfo.ServerProbe(options.server_pids)
    facts: dict[str, Any] = {
        "run": run_id,
        "room": room,
        "urls": [t.url for t in targets],
        "publish_url": publish_target.url,
        "nofile": nofile,
        "planned_events": events,
        "sample_every": configs[0].sample_every,
        "processes": processes,
    }
    workers = _Workers(configs)
    try:
        hello = await workers.collect(timeout=60)
        facts["workers"] = [{"pid": h["hello"], "nofile": h["nofile"]} for h in hello]
        facts["rss_before"] = probe.rss()
        say(
            options,
            f"run {run_id}: room {room}, {len(specs)} subscribers in {processes} "
            f"process(es), {events} events planned",
        )
        started = time.monotonic()
        facts["connected"] = await workers.ask("connect")
        facts["connect_wall_s"] = time.monotonic() - started
        say(
            options,
            f"connected in {facts['connect_wall_s']:.2f}s: "
            f"{report.connected_summary(facts['connected'])}",
        )
        await asyncio.sleep(options.settle)
        facts["rss_connected"] = probe.rss()
        if options.hold > 0:
            say(options, f"holding the connections idle for {options.hold:g}s")
            await asyncio.sleep(options.hold)
            facts["after_hold"] = await workers.ask("status")
            facts["rss_after_hold"] = probe.rss()
        connected = sum(sum(a["connected"].values()) for a in facts["connected"])
        if events and not connected:
            say(options, "no subscriber connected: nothing published")
            events = 0
        if events:
            await workers.ask("start")
            server_cpu0, wall0, own_cpu0 = (
                probe.cpu_seconds(),
                time.monotonic(),
                sysinfo.cpu_seconds(),
            )
            say(
                options,
                f"publishing {events} events to {publish_target.url} "
                + (f"at {options.rate:g}/s" if options.burst is None else "as fast as possible"),
            )
            deadline = None
            if options.burst is None:
                deadline = time.monotonic() + 2 * options.duration + 10
            result = await publish(
                publish_target,
                addresses[targets.index(publish_target)]
                if publish_target in targets
                else publish_target.resolve(),
                tokens.publisher or "",
                room,
                run_id,
                events=events,
                rate=options.rate if options.burst is None else None,
                publishers=options.publishers,
                window=options.window,
                deadline=deadline,
            )
            own_cpu1, wall_published = sysinfo.cpu_seconds(), time.monotonic()
            facts["publish"] = result
            facts["publisher_cpu"] = {
                "wall_s": wall_published - wall0,
                "cpu_s": own_cpu1 - own_cpu0,
            }
            say(options, f"published {result.accepted}/{result.attempted} accepted; draining")
            facts["results"] = await workers.ask(
                "drain", result.attempted, sorted(result.failed), options.drain_timeout
            )
            server_cpu1, wall1 = probe.cpu_seconds(), time.monotonic()
            if server_cpu0 and server_cpu1:
                facts["server_cpu"] = {
                    str(pid): 100 * (server_cpu1[pid] - server_cpu0.get(pid, 0)) / (wall1 - wall0)
                    for pid in server_cpu1
                }
            facts["rss_end"] = probe.rss()
        else:
            facts["publish"] = PublishResult()
            facts["final_status"] = await workers.ask("status")
        await workers.ask("close", timeout=30)
    finally:
        workers.stop()
    out = report.build(options, facts)
    if not options.quiet:
        print(report.table(out), flush=True)
    if options.json_path:
        report.write_json(out, options.json_path)
    return out


def say(options: Options, text: str) -> None:
    if not options.quiet:
        print(f"[loadtest {time.strftime('%H:%M:%S')}] {text}", flush=True)


def run_sync(options: Options) -> dict[str, Any]:
    """Run on uvloop (asyncio's loop where uvloop is not installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(options))
    return uvloop.run(run(options))
