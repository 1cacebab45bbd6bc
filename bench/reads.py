"""Latency of the board reads at game scale, per engine configuration.

For each configuration (SQLite with the memory engine; SQLite with the Redis engine) and
repeat: migrate a fresh SQLite file, seed --players players straight into it in one statement
(store/seed.py), start a fresh `rankpulse serve` (pinned to --server-cpu; a fresh redis-server)
and wait for /readyz 200 with the whole board served, and for deep pages to be served from
the engine's board (not SQL: the Redis engine's start-up rebuild), then send --requests serial
GETs of each kind over one keep-alive connection (the client pinned to --client-cpu), every
answer checked:

- `top page`: GET /api/leaderboard?offset=0&limit=100
- `deep page`: GET /api/leaderboard?offset=<random, up to the last page>&limit=100
- `player`: GET /api/players/{random seeded id}
- `around`: GET /api/players/{random seeded id}/around?radius=5

Prints p50/p99 per read (medians over the repeats) and writes JSON. A read in O(log n + page)
costs about the same at 10,000 and at 1,000,000 players: run both to see it.

    .venv/bin/python bench/reads.py --players 1000000 --requests 500 --repeat 3 \
        --json docs/benchmarks/reads-1m.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    seed_sqlite,
    target,
    token,
    wait_until,
)
from results import CONFIGS, _ready_with_board

from quart_app.loadtest.tracker import summarize
from quart_app.loadtest.wire import request
from quart_app.store.seed import seeded_id

PAGE = 100
RADIUS = 5
READS = ("top page", "deep page", "player", "around")


class Reader(Client):
    """The benchmarks' keep-alive client, for GETs."""

    async def get(self, path: str) -> tuple[int, bytes]:
        assert self.protocol is not None and self.protocol.transport is not None
        self.protocol.waiter = asyncio.get_running_loop().create_future()
        self.protocol.transport.write(request("GET", self.target, path, self.headers))
        return await self.protocol.waiter


def _paths(kind: str, players: int, count: int, rng: random.Random) -> list[str]:
    def some_player() -> str:
        return seeded_id("s", rng.randrange(players))

    if kind == "top page":
        return [f"/api/leaderboard?offset=0&limit={PAGE}" for _ in range(count)]
    if kind == "deep page":
        last = max(0, players - PAGE)
        return [
            f"/api/leaderboard?offset={rng.randint(0, last)}&limit={PAGE}" for _ in range(count)
        ]
    if kind == "player":
        return [f"/api/players/{some_player()}" for _ in range(count)]
    return [f"/api/players/{some_player()}/around?radius={RADIUS}" for _ in range(count)]


def _check(kind: str, path: str, body: Any, players: int) -> bool:
    """The answer is the read asked for (a fast wrong answer is no result)."""
    if kind in ("top page", "deep page"):
        offset = int(path.split("offset=")[1].split("&")[0])
        entries = body.get("entries", [])
        return (
            body.get("total") == players
            and len(entries) == min(PAGE, players - offset)
            and all(e["rank"] == offset + 1 + i for i, e in enumerate(entries))
        )
    if kind == "player":
        return body.get("player_id") == path.rsplit("/", 1)[1] and body.get("rank", 0) >= 1
    pid = path.split("/")[3]
    ranks = [e["rank"] for e in body.get("entries", [])]
    return pid in {e["player_id"] for e in body["entries"]} and ranks == list(
        range(ranks[0], ranks[0] + len(ranks))
    )


async def _time_reads(url: str, kind: str, paths: list[str], players: int) -> dict[str, Any]:
    client = Reader(target(url), token("bench-reader", ""))
    await client.open()
    latencies: list[float] = []
    wrong = 0
    try:
        for path in paths:
            sent = time.perf_counter()
            status, answer = await client.get(path)
            latencies.append((time.perf_counter() - sent) * 1000)
            if status != 200 or not _check(kind, path, json.loads(answer), players):
                wrong += 1
                if wrong == 1:
                    print(f"  {path}: HTTP {status} {answer[:200]!r}", flush=True)
    finally:
        client.close()
    return {"latency_ms": summarize(latencies), "wrong": wrong}


async def _settle(url: str, players: int, timeout: float = 900.0) -> float:
    """Wait until deep pages are served from the engine's board, not from SQL (the Redis
    engine serves reads from SQL while its rebuild at start-up has not swapped the whole board
    in: /readyz is 200 then, and the answers are right, only slower). Seen from outside as
    five deep-page reads in a row under 50 ms. Returns when (perf_counter)."""
    client = Reader(target(url), token("bench-reader", ""))
    await client.open()
    deadline = time.perf_counter() + timeout
    fast = 0
    try:
        while fast < 5 and time.perf_counter() < deadline:
            sent = time.perf_counter()
            await client.get(f"/api/leaderboard?offset={max(0, players - 2 * PAGE)}&limit={PAGE}")
            fast = fast + 1 if time.perf_counter() - sent < 0.05 else 0
        return time.perf_counter()
    finally:
        client.close()


async def one_run(config: str, args: argparse.Namespace, run: int) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="bench-reads-")
    redis = None
    server = None
    try:
        seed_s = await seed_sqlite(workdir, args.players)
        redis = Redis(args.server_cpu) if config == "redis" else None
        spawned = time.perf_counter()
        server = Server(workdir, redis_url=redis.url if redis else None, cpus=args.server_cpu)
        wait_until(
            lambda: _ready_with_board(server.url, args.players), 600, "/readyz and the board"
        )
        ready_s = time.perf_counter() - spawned
        settled_s = await _settle(server.url, args.players) - spawned
        rng = random.Random(run)
        out: dict[str, Any] = {
            "config": config,
            "run": run,
            "seed_s": seed_s,
            "ready_s": ready_s,
            "settled_s": settled_s,
            "reads": {},
        }
        for kind in READS:
            paths = _paths(kind, args.players, args.requests, rng)
            # A few untimed reads first: the first request of a kind warms its code paths.
            await _time_reads(server.url, kind, paths[:20], args.players)
            out["reads"][kind] = await _time_reads(server.url, kind, paths, args.players)
        return out
    finally:
        if server:
            server.stop()
        if redis:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpu.split(",")})
    runs: list[dict[str, Any]] = []
    for run in range(args.repeat):
        for config in args.configs:
            print(f"run {run + 1}/{args.repeat}: {CONFIGS[config]} ...", flush=True)
            result = await one_run(config, args, run)
            print(
                f"  /readyz and the whole board after {result['ready_s']:.1f} s, deep pages "
                f"from the engine after {result['settled_s']:.1f} s",
                flush=True,
            )
            for kind, one in result["reads"].items():
                lat = one["latency_ms"]
                print(
                    f"  {kind}: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, "
                    f"wrong {one['wrong']}",
                    flush=True,
                )
            runs.append(result)
    summary = []
    for config in args.configs:
        mine = [r for r in runs if r["config"] == config]
        for kind in READS:
            at = [r["reads"][kind] for r in mine]
            summary.append(
                {
                    "config": config,
                    "name": CONFIGS[config],
                    "read": kind,
                    "p50_ms": median([a["latency_ms"]["p50"] for a in at]),
                    "p99_ms": median([a["latency_ms"]["p99"] for a in at]),
                    "wrong": sum(a["wrong"] for a in at),
                    "runs_p50_ms": [round(a["latency_ms"]["p50"], 2) for a in at],
                    "settled_s": median([r["settled_s"] for r in mine]),
                }
            )
    print()
    print(
        f"board reads: {args.players:,} seeded players, {args.requests} serial reads of each "
        f"kind, median of {args.repeat}; server on CPU {args.server_cpu}, "
        f"client on CPU {args.client_cpu}"
    )
    print_table(
        ("configuration", "read", "p50 ms", "p99 ms", "wrong", "runs p50 ms"),
        [
            (
                s["name"],
                s["read"],
                s["p50_ms"],
                s["p99_ms"],
                s["wrong"],
                ", ".join(f"{v:.2f}" for v in s["runs_p50_ms"]),
            )
            for s in summary
        ],
    )
    return {
        "benchmark": "reads",
        "machine": machine(),
        "args": vars(args),
        "summary": summary,
        "runs": runs,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=500, help="serial reads of each kind")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--configs",
        type=lambda s: s.split(","),
        default=["sqlite", "redis"],
        help="comma-separated: sqlite,redis",
    )
    parser.add_argument("--server-cpu", default="0", help="taskset -c for the server (and redis)")
    parser.add_argument("--client-cpu", default="1", help="CPUs for this client")
    parser.add_argument("--json", default="bench/out/reads.json")
    return parser.parse_args()


if __name__ == "__main__":
    run_benchmark(main, parse_args())
