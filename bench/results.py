"""results/s of the match-result write path, per engine configuration.

For each code variant (--variants name=dir: the checkout whose quart_app the server runs, so
"before" and "after" a change are measured in one run), configuration (SQLite with the memory
engine; SQLite with the Redis engine), concurrency and repeat: migrate a fresh SQLite file,
seed --players players straight into it in one statement (store/seed.py), start a fresh
`rankpulse serve` (pinned to --server-cpu; a fresh redis-server) and time its start-up (to
/readyz 200 with the whole board served), create the matches among the seeded players, then
POST their results with C keep-alive connections, each one request at a time (the client is
pinned to --client-cpu) while an SSE subscriber of `matches` counts that every match:result
arrives. Prints results/s and latency p50/p99 (medians over the repeats) and writes JSON.

    .venv/bin/python bench/results.py --matches 2000 --players 200 --concurrency 16 --repeat 3
    .venv/bin/python bench/results.py --players 1000000 --matches 300 --concurrency 1,16 \
        --configs sqlite --variants before=/tmp/before,after=. \
        --json docs/benchmarks/results-1m.json
    .venv/bin/python bench/results.py --players 1000000 --concurrency 16 --configs pg-redis \
        --workers 1,2 --server-cpu 0,1

PostgreSQL runs in a throwaway cluster (fsync on) pinned with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    Client,
    Postgres,
    Redis,
    Server,
    machine,
    median,
    print_table,
    run_benchmark,
    seed_database,
    seed_sqlite,
    target,
    token,
    wait_until,
)

from quart_app.loadtest.sysinfo import ServerProbe
from quart_app.loadtest.tracker import summarize
from quart_app.store.seed import seeded_id

CONFIGS = {
    "sqlite": "SQLite + memory engine",
    "redis": "SQLite + Redis engine",
    "pg": "PostgreSQL + memory engine",
    "pg-redis": "PostgreSQL + Redis engine",
}


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


class Subscriber(asyncio.Protocol):
    """An SSE stream of the room `matches` that counts `match:result` frames (the check that
    results are delivered, not only answered)."""

    MARKER = b"event: match:result\n"

    def __init__(self) -> None:
        self.count = 0
        self._tail = b""
        self._changed = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, url: str) -> Subscriber:
        where = target(url)
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(cls, "127.0.0.1", where.port)
        reader = token("bench-watcher", "")
        transport.write(
            f"GET /api/events?rooms=matches HTTP/1.1\r\nHost: 127.0.0.1:{where.port}\r\n"
            f"Authorization: Bearer {reader}\r\n\r\n".encode()
        )
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        # A frame may straddle two reads: keep what could be the start of a marker.
        buffer = self._tail + data
        self.count += buffer.count(self.MARKER)
        self._tail = buffer[-(len(self.MARKER) - 1) :]
        self._changed.set()

    async def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < count and time.monotonic() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - time.monotonic()):
                    await self._changed.wait()
        return self.count >= count

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _get_json(url: str, bearer: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {bearer}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def _redis_cli(port: int, *command: str) -> list[str]:
    """One redis-cli command's output lines (empty when redis-cli is missing)."""
    try:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), *command],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in done.stdout.splitlines() if line and not line.startswith("#")]


def _redis_board_complete(port: int, prefix: str = "lrp:") -> bool:
    """The Redis engine serves its own board: a rebuild swapped it in (board:ready, see
    engine/redis/board.py) and none is running (board:rebuild)."""
    ready = _redis_cli(port, "EXISTS", prefix + "board:ready")
    rebuilding = _redis_cli(port, "EXISTS", prefix + "board:rebuild")
    return ready == ["1"] and rebuilding == ["0"]


def _ready_with_board(url: str, players: int) -> bool:
    """/readyz 200 and the whole board served."""
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            if response.status != 200:
                return False
    except OSError:
        return False
    page = _get_json(url + "/api/leaderboard?limit=1", token("bench-watcher", ""))
    return bool(page) and page.get("total") == players


async def one_run(
    config: str, variant: str, code: str, args: argparse.Namespace, run: int, workers: int = 1
) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="bench-results-")
    redis = None
    postgres = None
    server = None
    subscriber = None
    try:
        env = {"PYTHONPATH": code}
        if config.startswith("pg"):
            postgres = Postgres(args.server_cpu)
            env["DATABASE_URL"] = postgres.url
            seed_s = await seed_database(postgres.url, workdir, args.players, code)
        else:
            seed_s = await seed_sqlite(workdir, args.players, code)
        redis = Redis(args.server_cpu) if config.endswith("redis") else None
        spawned = time.perf_counter()
        server = Server(
            workdir,
            redis_url=redis.url if redis else None,
            cpus=args.server_cpu,
            env=env,
            args=("--workers", str(workers)) if workers > 1 else (),
        )
        wait_until(
            lambda: _ready_with_board(server.url, args.players), 600, "/readyz and the board"
        )
        startup_s = time.perf_counter() - spawned
        # A result is answered once the engine's board is whole (an instance may serve reads
        # from SQL while its board still loads): the first one marks the board loaded, and
        # the timed results start after it.
        warm_up = [seeded_id("s", 0), seeded_id("s", args.players - 1)]
        await _drive(
            server.url, 1, [("/api/matches", {"match_id": "warm-up", "player_ids": warm_up})], {201}
        )
        await _drive(
            server.url, 1, [("/api/matches/warm-up/result", {"winner_id": warm_up[0]})], {200}
        )
        if redis is not None and not args.during_rebuild:
            # /readyz says 200 once the database and Redis answer, and reads are served from
            # SQL while the Redis engine's start-up rebuild still stages the board (at
            # 1,000,000 players it outlasts start-up's wait): results timed during it queue
            # behind the staging scripts. The timed phase starts on the engine's whole board.
            wait_until(lambda: _redis_board_complete(redis.port), 600, "the Redis board")
        loaded_s = time.perf_counter() - spawned
        subscriber = await Subscriber.open(server.url)
        rng = random.Random(run)
        out: dict[str, Any] = {
            "config": config,
            "variant": variant,
            "workers": workers,
            "run": run,
            "seed_s": seed_s,
            "startup_s": startup_s,
            "loaded_s": loaded_s,
            "by_concurrency": {},
        }
        delivered = 0
        for concurrency in args.concurrency:
            pairs = [
                [seeded_id("s", i) for i in rng.sample(range(args.players), 2)]
                for _ in range(args.matches)
            ]
            ids = [f"m{run}-c{concurrency}-{i}" for i in range(len(pairs))]
            creates = [
                ("/api/matches", {"match_id": match_id, "player_ids": pair})
                for match_id, pair in zip(ids, pairs, strict=True)
            ]
            created = await _drive(server.url, concurrency, creates, {201})
            results = [
                (
                    f"/api/matches/{match_id}/result",
                    {"draw": True} if rng.random() < 0.1 else {"winner_id": rng.choice(pair)},
                )
                for match_id, pair in zip(ids, pairs, strict=True)
            ]
            rng.shuffle(results)
            if redis is not None:
                _redis_cli(redis.port, "CONFIG", "RESETSTAT")
                _redis_cli(redis.port, "SLOWLOG", "RESET")
            probe = ServerProbe([server.pid])
            cpu0, wall0 = probe.cpu_seconds() or {}, time.perf_counter()
            resulted = await _drive(server.url, concurrency, results, {200})
            cpu1, wall1 = probe.cpu_seconds() or {}, time.perf_counter()
            if cpu0 and cpu1:
                # CPU-bound near 100%; well below, the time goes to waiting (SQLite, Redis).
                resulted["server_cpu_percent"] = (
                    100 * (cpu1[server.pid] - cpu0[server.pid]) / (wall1 - wall0)
                )
                # The figure that survives a loaded machine: what one result costs the server
                # (results/s then follows on a quiet core as about 1000 / this).
                resulted["server_cpu_ms_per_result"] = (
                    1000 * (cpu1[server.pid] - cpu0[server.pid]) / len(results)
                )
            if redis is not None:
                resulted["rebuilt_before_end"] = _redis_board_complete(redis.port)
                # Where Redis spent the timed phase (the profile behind a slow engine).
                resulted["redis_commandstats"] = _redis_cli(redis.port, "INFO", "commandstats")
                resulted["redis_slowlog"] = _redis_cli(redis.port, "SLOWLOG", "GET", "10")
            delivered += len(results)
            resulted["delivered"] = await subscriber.wait_for(delivered, 30.0)
            out["by_concurrency"][str(concurrency)] = {"create": created, "result": resulted}
        return out
    finally:
        if subscriber:
            subscriber.close()
        if server:
            server.stop()
        if redis:
            redis.stop()
        if postgres:
            postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpu.split(",")})
    runs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for run in range(args.repeat):
        # Interleave variants and configurations so a drift of the machine hits all alike.
        for variant, code in args.variants.items():
            for config, workers in [(c, w) for c in args.configs for w in args.workers]:
                print(
                    f"run {run + 1}/{args.repeat}: {variant}, {CONFIGS[config]}, "
                    f"{workers} worker(s) ...",
                    flush=True,
                )
                try:
                    result = await one_run(config, variant, code, args, run, workers)
                except (TimeoutError, RuntimeError, subprocess.CalledProcessError) as exc:
                    # A server that never got ready (the old code at 1,000,000 players took
                    # minutes): recorded, and the other runs still count.
                    print(f"  FAILED: {exc}", flush=True)
                    failures.append(
                        {
                            "config": config,
                            "variant": variant,
                            "workers": workers,
                            "run": run,
                            "error": str(exc),
                        }
                    )
                    continue
                print(
                    f"  seeded {args.players:,} in {result['seed_s']:.1f} s, "
                    f"start-up {result['startup_s']:.1f} s, "
                    f"board whole in the engine {result['loaded_s']:.1f} s",
                    flush=True,
                )
                for concurrency, one in result["by_concurrency"].items():
                    r = one["result"]
                    print(
                        f"  c={concurrency}: {r['per_s']:,.0f} results/s, "
                        f"p50 {r['latency_ms']['p50']:.2f} ms, "
                        f"p99 {r['latency_ms']['p99']:.2f} ms, "
                        f"server CPU {r.get('server_cpu_percent', 0):.0f}% "
                        f"({r.get('server_cpu_ms_per_result', 0):.2f} ms/result), "
                        f"delivered {'yes' if r['delivered'] else 'NO'}",
                        flush=True,
                    )
                runs.append(result)
    summary = []
    for variant in args.variants:
        for config, workers in [(c, w) for c in args.configs for w in args.workers]:
            mine = [
                r
                for r in runs
                if r["config"] == config and r["variant"] == variant and r["workers"] == workers
            ]
            if not mine:
                continue
            for concurrency in args.concurrency:
                at = [r["by_concurrency"][str(concurrency)] for r in mine]
                summary.append(
                    {
                        "variant": variant,
                        "config": config,
                        "workers": workers,
                        "name": CONFIGS[config],
                        "concurrency": concurrency,
                        "results_per_s": median([a["result"]["per_s"] for a in at]),
                        "result_p50_ms": median([a["result"]["latency_ms"]["p50"] for a in at]),
                        "result_p99_ms": median([a["result"]["latency_ms"]["p99"] for a in at]),
                        "server_cpu_percent": median(
                            [a["result"].get("server_cpu_percent") for a in at]
                        ),
                        "server_cpu_ms_per_result": median(
                            [a["result"].get("server_cpu_ms_per_result") for a in at]
                        ),
                        "startup_s": median([r["startup_s"] for r in mine]),
                        "loaded_s": median([r.get("loaded_s") for r in mine]),
                        "seed_s": median([r["seed_s"] for r in mine]),
                        "delivered": all(a["result"]["delivered"] for a in at),
                        "errors": sum(
                            sum(a["result"]["errors"].values())
                            + sum(a["create"]["errors"].values())
                            for a in at
                        ),
                        "runs": [round(a["result"]["per_s"], 1) for a in at],
                    }
                )
    print()
    print(
        f"match results: {args.players:,} seeded players, {args.matches} results per "
        f"concurrency, median of {args.repeat}; server on CPU {args.server_cpu}, "
        f"client on CPU {args.client_cpu}"
    )
    print_table(
        (
            "variant",
            "configuration",
            "workers",
            "conc.",
            "results/s",
            "p50 ms",
            "p99 ms",
            "server CPU %",
            "CPU ms/result",
            "start-up s",
            "delivered",
            "errors",
            "runs results/s",
        ),
        [
            (
                s["variant"],
                s["name"],
                s["workers"],
                s["concurrency"],
                s["results_per_s"],
                s["result_p50_ms"],
                s["result_p99_ms"],
                s["server_cpu_percent"],
                s["server_cpu_ms_per_result"],
                s["startup_s"],
                s["delivered"],
                s["errors"],
                ", ".join(f"{v:,.0f}" for v in s["runs"]),
            )
            for s in summary
        ],
    )
    return {
        "benchmark": "results",
        "machine": machine(),
        "args": vars(args),
        "summary": summary,
        "runs": runs,
        "failures": failures,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--matches", type=int, default=2000)
    parser.add_argument(
        "--players", type=int, default=200, help="players seeded in bulk into SQL before start"
    )
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(c) for c in s.split(",") if c],
        default=[16],
        help="comma-separated, e.g. 1,16 (each on the same server, one after the other)",
    )
    parser.add_argument(
        "--variants",
        type=lambda s: dict(v.split("=", 1) for v in s.split(",") if v),
        default={"current": str(ROOT)},
        help="name=dir,...: checkouts whose quart_app the server runs (PYTHONPATH), "
        "e.g. before=/tmp/before,after=.",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--configs",
        type=lambda s: [c for c in s.split(",") if c],
        default=list(CONFIGS),
        help="comma-separated: " + ",".join(CONFIGS),
    )
    parser.add_argument(
        "--workers",
        type=lambda s: [int(w) for w in s.split(",") if w],
        default=[1],
        help="comma-separated, e.g. 1,2: rankpulse serve --workers N (N processes on one "
        "port; N > 1 needs a Redis config); each N is a configuration of its own",
    )
    parser.add_argument(
        "--during-rebuild",
        action="store_true",
        help="Redis configs: time results as soon as /readyz says 200, while the start-up "
        "rebuild may still stage the board (results' latency during a rebuild)",
    )
    parser.add_argument("--server-cpu", default="0", help="taskset -c for the server (and redis)")
    parser.add_argument("--client-cpu", default="1", help="CPUs for this client")
    parser.add_argument("--json", default="bench/out/results.json")
    args = parser.parse_args()
    args.variants = {name: str(Path(code).resolve()) for name, code in args.variants.items()}
    unknown = set(args.configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configuration(s) {sorted(unknown)}")
    return args


if __name__ == "__main__":
    run_benchmark(main, parse_args())
