"""The fan-out performance targets, measured with the load generator (quart_app.loadtest).

Every scenario starts fresh server processes (`python -m quart_app serve`: Hypercorn on
uvloop in one process, so its pid holds the connections) pinned to --server-cpu, and runs
the generator pinned to --gen-cpu, on this machine:

  a   hold 10,000 idle subscribers on one instance (through a heartbeat): all held, and the
      server's RSS growth per connection; --max-idle N also tries N (~19,000: how close one
      process gets to the 20,000 open-file limit)
  b   a burst of --burst-events events to 1,000 subscribers: deliveries/s
  c1  20 events/s for --duration s to 1,000 subscribers, one instance: p99 latency
  c2  the same over two instances sharing Redis (subscribers split across both, all
      events published to the first): p99 latency
  d   1 event/s for --duration s to 10,000 subscribers: p99 latency
  each over SSE and over WebSocket (--transports sse,ws), and for each --workers count
  (`rankpulse serve --workers N`: N processes on one port, Redis engine; e.g. --workers 1,2
  compares one worker with two in one run; scenario names get a -wN suffix when N > 1).

A scenario also FAILS when any subscriber did not connect, lost its connection, or missed,
repeated or reordered an event. The targets are the TARGETS below (override with
--target name=value). Prints one table, target vs measured, PASS/FAIL; writes JSON.

    .venv/bin/python bench/fanout.py                       # everything, ~10 minutes
    .venv/bin/python bench/fanout.py --only b,c1 --transports sse --duration 10
    .venv/bin/python bench/fanout.py --only a --max-idle 19000
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from _common import SECRET, Redis, Server, fmt, machine, print_table, run_benchmark

from quart_app.loadtest.report import table
from quart_app.loadtest.runner import Options, run
from quart_app.loadtest.sysinfo import parse_cpu_list

# The targets. Names are what --target overrides.
TARGETS: dict[str, float] = {
    "idle_connections": 10_000,  # held at once on one instance (a)
    "idle_rss_kib": 20.0,  # server RSS growth per idle SSE connection, at most (a)
    "burst_deliveries_per_s": 100_000,  # at least (b)
    "steady_p99_ms": 25.0,  # p99 at 20 events/s to 1,000 on one instance, at most (c1)
    "cluster_p99_ms": 50.0,  # the same on two instances through Redis, at most (c2)
    "tenk_p99_ms": 100.0,  # p99 at 1 event/s to 10,000, at most (d)
}


@dataclass(frozen=True)
class Scenario:
    key: str
    transport: str
    title: str
    subscribers: int
    instances: int = 1
    burst: int | None = None
    rate: float | None = None
    duration: float = 0.0
    hold: float = 0.0
    processes: int = 1
    workers: int = 1  # rankpulse serve --workers N (per instance)

    @property
    def name(self) -> str:
        return f"{self.key}-{self.transport}" + (f"-w{self.workers}" if self.workers > 1 else "")


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    found: list[Scenario] = []
    for transport in args.transports:
        label = transport.upper()
        found += [
            Scenario(
                "a",
                transport,
                f"{args.idle:,} idle {label}, one instance",
                args.idle,
                hold=args.hold,
                processes=max(1, -(-args.idle // 15_000)),
            ),
            Scenario(
                "b",
                transport,
                f"burst {args.burst_events:,} events to 1,000 {label}",
                1_000,
                burst=args.burst_events,
            ),
            Scenario(
                "c1",
                transport,
                f"20 ev/s to 1,000 {label}, one instance",
                1_000,
                rate=20,
                duration=args.duration,
            ),
            Scenario(
                "c2",
                transport,
                f"20 ev/s to 1,000 {label}, two instances + Redis",
                1_000,
                instances=2,
                rate=20,
                duration=args.duration,
            ),
            Scenario(
                "d", transport, f"1 ev/s to 10,000 {label}", 10_000, rate=1, duration=args.duration
            ),
        ]
        if args.max_idle:
            found.append(
                Scenario(
                    "max",
                    transport,
                    f"{args.max_idle:,} idle {label}, one instance (fd limit 20,000)",
                    args.max_idle,
                    hold=args.hold,
                    processes=max(2, -(-args.max_idle // 15_000)),
                )
            )
    chosen = [s for s in found if not args.only or s.key in args.only]
    return [
        dataclasses.replace(s, workers=n, title=s.title + (f", --workers {n}" if n > 1 else ""))
        for s in chosen
        for n in args.workers
    ]


def judge(
    scenario: Scenario, report: dict[str, Any], targets: dict[str, float]
) -> list[dict[str, Any]]:
    """Rows of the final table: (metric, target, measured, PASS/FAIL)."""
    row = report["transports"][scenario.transport]
    clean = report["ok"]
    note = "" if clean else "; ".join(report["problems"])[:300]
    if report["generator"]["bottleneck"]:
        note = ("generator was the bottleneck (figure is a bound); " + note).strip("; ")
    rows: list[dict[str, Any]] = []

    def add(metric: str, target: str, measured: Any, ok: bool) -> None:
        rows.append(
            {
                "scenario": scenario.name,
                "title": scenario.title,
                "metric": metric,
                "target": target,
                "measured": measured,
                "pass": ok and clean,
                "note": note,
            }
        )

    if scenario.key in ("a", "max"):
        held = row.get("held_after_hold", row.get("held_end", row["connected"]))
        wanted = targets["idle_connections"] if scenario.key == "a" else scenario.subscribers
        add("connections held", f">= {wanted:,.0f}", held, held >= wanted)
        per = report["server"].get("rss_per_connection_kib")
        add(
            "server RSS per connection KiB",
            f"<= {targets['idle_rss_kib']:g}",
            per,
            per is not None and per <= targets["idle_rss_kib"],
        )
    elif scenario.key == "b":
        rate = report["deliveries"].get("per_s")
        add(
            "deliveries/s",
            f">= {targets['burst_deliveries_per_s']:,.0f}",
            rate,
            rate is not None and rate >= targets["burst_deliveries_per_s"],
        )
    else:
        p99 = row.get("latency_ms", {}).get("p99")
        limit = targets[
            {"c1": "steady_p99_ms", "c2": "cluster_p99_ms"}.get(scenario.key, "tenk_p99_ms")
        ]
        add("p99 ms", f"<= {limit:g}", p99, p99 is not None and p99 <= limit)
    return rows


async def run_scenario(scenario: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="bench-fanout-")
    shared = scenario.instances > 1 or scenario.workers > 1 or args.engine == "redis"
    redis = Redis(args.server_cpu) if shared else None
    serve_args = ("--workers", str(scenario.workers)) if scenario.workers > 1 else ()
    servers: list[Server] = []
    try:
        for _ in range(scenario.instances):
            servers.append(
                Server(
                    workdir,
                    redis_url=redis.url if redis else None,
                    cpus=args.server_cpu,
                    args=serve_args,
                )
            )
        options = Options(
            urls=[server.url for server in servers],
            sse=scenario.subscribers if scenario.transport == "sse" else 0,
            ws=scenario.subscribers if scenario.transport == "ws" else 0,
            burst=scenario.burst,
            rate=scenario.rate,
            duration=scenario.duration,
            hold=scenario.hold,
            processes=max(scenario.processes, args.processes),
            jwt_secret=SECRET,
            cpus=args.gen_cpus,
            server_pids=[pid for server in servers for pid in _serving_pids(server.pid)],
            settle=2.0,
            drain_timeout=args.drain_timeout,
            quiet=True,
            label=scenario.name,
        )
        report = await run(options)
        if args.verbose:
            print(table(report))
        return report
    finally:
        for server in servers:
            server.stop()
        if redis:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _serving_pids(pid: int) -> list[int]:
    """The processes holding connections: with --workers N, the supervisor's children."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            workers = [int(child) for child in children.read().split()]
    except OSError:
        workers = []
    return workers or [pid]


def summary_line(scenario: Scenario, report: dict[str, Any]) -> str:
    row = report["transports"][scenario.transport]
    lat = row.get("latency_ms") or {}
    parts = [f"{row['connected']:,}/{row['requested']:,} connected"]
    if report["server"].get("rss_per_connection_kib") is not None:
        parts.append(f"{report['server']['rss_per_connection_kib']:.1f} KiB/conn")
    if report["deliveries"]:
        parts.append(f"{fmt(report['deliveries']['per_s'], 0)} deliveries/s")
    if lat.get("p99") is not None:
        parts.append(f"p50/p99/max {lat['p50']:.1f}/{lat['p99']:.1f}/{lat['max']:.1f} ms")
    if report["server"].get("cpu_percent_during_delivery"):
        parts.append(
            "server CPU "
            + "/".join(
                f"{v:.0f}%" for v in report["server"]["cpu_percent_during_delivery"].values()
            )
        )
    gen = report["generator"]["processes"]
    if gen and "cpu_percent_delivery" in gen[0]:
        parts.append("generator CPU " + "/".join(f"{p['cpu_percent_delivery']:.0f}%" for p in gen))
    parts.append("OK" if report["ok"] else "PROBLEMS: " + "; ".join(report["problems"])[:200])
    return ", ".join(parts)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    targets = dict(TARGETS)
    for item in args.target:
        name, _, value = item.partition("=")
        if name not in targets:
            raise SystemExit(f"unknown target {name!r}; known: {sorted(targets)}")
        targets[name] = float(value)
    chosen = scenarios(args)
    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for scenario in chosen:
        print(f"[{time.strftime('%H:%M:%S')}] {scenario.name}: {scenario.title} ...", flush=True)
        try:
            report = await run_scenario(scenario, args)
        except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the rest
            print(f"  failed: {type(exc).__name__}: {exc}", flush=True)
            rows.append(
                {
                    "scenario": scenario.name,
                    "title": scenario.title,
                    "metric": "run",
                    "target": "completes",
                    "measured": f"{type(exc).__name__}",
                    "pass": False,
                    "note": str(exc)[:300],
                }
            )
            results.append({"scenario": scenario.name, "error": repr(exc)})
            continue
        print(f"  {summary_line(scenario, report)}", flush=True)
        results.append({"scenario": scenario.name, "title": scenario.title, "report": report})
        rows.extend(judge(scenario, report, targets))
    print()
    print(
        f"fan-out targets: server on CPU {args.server_cpu}, generator on CPU(s) "
        f"{','.join(map(str, sorted(args.gen_cpus)))}; steady runs {args.duration:g}s"
    )
    print_table(
        ("scenario", "what", "metric", "target", "measured", "verdict"),
        [
            (
                r["scenario"],
                r["title"],
                r["metric"],
                r["target"],
                fmt(r["measured"], 1),
                "PASS" if r["pass"] else "FAIL",
            )
            for r in rows
        ],
    )
    for r in rows:
        if r["note"]:
            print(f"  {r['scenario']}: {r['note']}")
    return {
        "benchmark": "fanout",
        "machine": machine(),
        "targets": targets,
        "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
        "table": rows,
        "scenarios": results,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        type=lambda s: {k for k in s.split(",") if k},
        default=set(),
        help="scenario keys: a,b,c1,c2,d,max",
    )
    parser.add_argument(
        "--transports", type=lambda s: [t for t in s.split(",") if t], default=["sse", "ws"]
    )
    parser.add_argument("--idle", type=int, default=10_000, help="subscribers of scenario a")
    parser.add_argument(
        "--max-idle", type=int, default=0, help="also try this many idle subscribers (e.g. 19000)"
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=20.0,
        help="seconds to hold idle connections (past one 15 s heartbeat)",
    )
    parser.add_argument("--burst-events", type=int, default=1_000)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of steady rate")
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument(
        "--engine",
        choices=("memory", "redis"),
        default="memory",
        help="engine of the one-instance scenarios",
    )
    parser.add_argument("--server-cpu", default="0", help="taskset -c for servers and redis")
    parser.add_argument(
        "--gen-cpu", dest="gen_cpus", type=parse_cpu_list, default={1}, help="CPUs of the generator"
    )
    parser.add_argument("--processes", type=int, default=1, help="generator processes (min)")
    parser.add_argument("--target", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--workers",
        type=lambda raw: [int(n) for n in raw.split(",")],
        default=[1],
        help="rankpulse serve --workers counts to run each scenario with, e.g. 1,2 "
        "(N > 1 runs on the Redis engine; give --server-cpu N cores)",
    )
    parser.add_argument("--verbose", action="store_true", help="print each run's full table")
    parser.add_argument("--json", default="bench/out/fanout.json")
    args = parser.parse_args()
    for transport in args.transports:
        if transport not in ("sse", "ws"):
            parser.error(f"unknown transport {transport!r}")
    return args


if __name__ == "__main__":
    run_benchmark(main, parse_args())
