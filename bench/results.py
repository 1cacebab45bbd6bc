"""results/s of the match-result write path, per engine configuration.

For each configuration (SQLite with the memory engine; SQLite with the Redis engine) and each
repeat: start a fresh `rankpulse serve` (pinned to --server-cpu) on a fresh SQLite file
(and a fresh redis-server), create N matches among M players, then POST their results with
C keep-alive connections, each one request at a time (the client is pinned to --client-cpu).
Prints results/s and latency p50/p99 (medians over the repeats) and writes JSON.

    .venv/bin/python bench/results.py --matches 2000 --players 200 --concurrency 16 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
from typing import Any

from _common import (
    Client,
    Redis,
    Server,
    machine,
    median,
    print_table,
    run_benchmark,
    target,
    token,
)

from quart_app.loadtest.sysinfo import ServerProbe
from quart_app.loadtest.tracker import summarize

CONFIGS = {"sqlite": "SQLite + memory engine", "redis": "SQLite + Redis engine"}


async def _drive(
    url: str, concurrency: int, jobs: list[tuple[str, dict[str, Any]]], expect: set[int]
) -> dict[str, Any]:
    """Send the jobs over `concurrency` connections; time each answer."""
    writer = token("bench-game-server", "matches:write")
    clients = [Client(target(url), writer) for _ in range(concurrency)]
    await asyncio.gather(*(client.open() for client in clients))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    queue = iter(jobs)

    async def worker(client: Client) -> None:
        for path, body in queue:
            sent = time.perf_counter()
            status, answer = await client.post(path, body)
            latencies.append((time.perf_counter() - sent) * 1000)
            if status not in expect:
                key = f"HTTP {status}"
                errors[key] = errors.get(key, 0) + 1
                if errors[key] == 1:
                    print(f"  {path}: HTTP {status} {answer[:200]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(worker(client) for client in clients))
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    return {
        "requests": len(jobs),
        "seconds": elapsed,
        "per_s": len(jobs) / elapsed,
        "latency_ms": summarize(latencies),
        "errors": errors,
    }


async def one_run(config: str, args: argparse.Namespace, run: int) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="bench-results-")
    redis = Redis(args.server_cpu) if config == "redis" else None
    server = Server(workdir, redis_url=redis.url if redis else None, cpus=args.server_cpu)
    try:
        rng = random.Random(run)
        players = [f"p{i}" for i in range(args.players)]
        pairs = [rng.sample(players, 2) for _ in range(args.matches)]
        creates = [
            ("/api/matches", {"match_id": f"m{run}-{i}", "player_ids": pair})
            for i, pair in enumerate(pairs)
        ]
        created = await _drive(server.url, args.concurrency, creates, {201})
        results = [
            (
                f"/api/matches/m{run}-{i}/result",
                {"draw": True} if rng.random() < 0.1 else {"winner_id": rng.choice(pair)},
            )
            for i, pair in enumerate(pairs)
        ]
        rng.shuffle(results)
        probe = ServerProbe([server.pid])
        cpu0, wall0 = probe.cpu_seconds() or {}, time.perf_counter()
        resulted = await _drive(server.url, args.concurrency, results, {200})
        cpu1, wall1 = probe.cpu_seconds() or {}, time.perf_counter()
        if cpu0 and cpu1:
            # CPU-bound near 100%; well below, the time goes to waiting (SQLite fsync, Redis).
            resulted["server_cpu_percent"] = (
                100 * (cpu1[server.pid] - cpu0[server.pid]) / (wall1 - wall0)
            )
        return {"config": config, "run": run, "create": created, "result": resulted}
    finally:
        server.stop()
        if redis:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpu.split(",")})
    runs: list[dict[str, Any]] = []
    for run in range(args.repeat):
        # Interleave the configurations so a drift of the machine hits both alike.
        for config in args.configs:
            print(f"run {run + 1}/{args.repeat}: {CONFIGS[config]} ...", flush=True)
            result = await one_run(config, args, run)
            r = result["result"]
            print(
                f"  {r['per_s']:,.0f} results/s, p50 {r['latency_ms']['p50']:.2f} ms, "
                f"p99 {r['latency_ms']['p99']:.2f} ms, server CPU "
                f"{r.get('server_cpu_percent', 0):.0f}%",
                flush=True,
            )
            runs.append(result)
    summary = []
    for config in args.configs:
        mine = [r for r in runs if r["config"] == config]
        summary.append(
            {
                "config": config,
                "name": CONFIGS[config],
                "results_per_s": median([r["result"]["per_s"] for r in mine]),
                "result_p50_ms": median([r["result"]["latency_ms"]["p50"] for r in mine]),
                "result_p99_ms": median([r["result"]["latency_ms"]["p99"] for r in mine]),
                "creates_per_s": median([r["create"]["per_s"] for r in mine]),
                "server_cpu_percent": median([r["result"].get("server_cpu_percent") for r in mine]),
                "errors": sum(
                    sum(r["result"]["errors"].values()) + sum(r["create"]["errors"].values())
                    for r in mine
                ),
                "runs": [round(r["result"]["per_s"], 1) for r in mine],
            }
        )
    print()
    print(
        f"match results: {args.matches} matches among {args.players} players, concurrency "
        f"{args.concurrency}, median of {args.repeat}; server on CPU {args.server_cpu}, "
        f"client on CPU {args.client_cpu}"
    )
    print_table(
        (
            "configuration",
            "results/s",
            "p50 ms",
            "p99 ms",
            "server CPU %",
            "creates/s",
            "errors",
            "runs results/s",
        ),
        [
            (
                s["name"],
                s["results_per_s"],
                s["result_p50_ms"],
                s["result_p99_ms"],
                s["server_cpu_percent"],
                s["creates_per_s"],
                s["errors"],
                ", ".join(f"{v:,.0f}" for v in s["runs"]),
            )
            for s in summary
        ],
    )
    if len(summary) == 2 and summary[0]["results_per_s"] and summary[1]["results_per_s"]:
        print(
            f"ratio {summary[1]['name']} / {summary[0]['name']}: "
            f"{summary[1]['results_per_s'] / summary[0]['results_per_s']:.2f}"
        )
    return {
        "benchmark": "results",
        "machine": machine(),
        "args": vars(args),
        "summary": summary,
        "runs": runs,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--matches", type=int, default=2000)
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--configs",
        type=lambda s: [c for c in s.split(",") if c],
        default=list(CONFIGS),
        help="comma-separated: sqlite,redis",
    )
    parser.add_argument("--server-cpu", default="0", help="taskset -c for the server (and redis)")
    parser.add_argument("--client-cpu", default="1", help="CPUs for this client")
    parser.add_argument("--json", default="bench/out/results.json")
    args = parser.parse_args()
    unknown = set(args.configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configuration(s) {sorted(unknown)}")
    return args


if __name__ == "__main__":
    run_benchmark(main, parse_args())
