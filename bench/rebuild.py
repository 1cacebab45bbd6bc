"""`rankpulse rebuild` of N players from SQLite into Redis, timed, with a board watcher.

Seeds --players players once (store/seed.py, one statement) and starts one redis-server
(pinned to --redis-cpu). For each repeat and each code variant (--variants name=dir, run
interleaved, so "before" and "after" share the machine's load), the Redis is flushed and
`rankpulse rebuild` (pinned to --rebuild-cpu) runs twice: "fill" into the empty Redis, then
"replace" over the whole board. A watcher polls the live board's size (ZCARD) every few
milliseconds during "replace" and records the smallest it saw: anything under N is a moment
where a reader would have seen a short board. Medians over the repeats; JSON.

    .venv/bin/python bench/rebuild.py --players 1000000 --repeat 3 \
        --variants before=/tmp/before,after=. --json docs/benchmarks/rebuild-1m.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any

import redis as redis_sync
from _common import (
    PYTHON,
    ROOT,
    Redis,
    machine,
    median,
    pinned,
    print_table,
    run_benchmark,
    seed_sqlite,
)

PREFIX = "lrp:"


class BoardWatcher:
    """Polls ZCARD of the live board from a thread: the smallest size, the poll count and the
    slowest answer (a Redis busy inside a script answers nobody meanwhile)."""

    def __init__(self, url: str) -> None:
        self._client = redis_sync.Redis.from_url(url, socket_timeout=120)
        self._stop = threading.Event()
        self.smallest: int | None = None
        self.polls = 0
        self.slowest_ms = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            asked = time.perf_counter()
            size = int(self._client.zcard(PREFIX + "board"))
            self.slowest_ms = max(self.slowest_ms, (time.perf_counter() - asked) * 1000)
            self.smallest = size if self.smallest is None else min(self.smallest, size)
            self.polls += 1
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()


def rebuild_once(code: str, workdir: str, redis_url: str, cpus: str | None) -> float | str:
    """The seconds `rankpulse rebuild` took, or the last line of its error."""
    env = {
        **os.environ,
        "PYTHONPATH": code,
        "DATABASE_URL": f"sqlite:///{workdir}/bench.db",
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": PREFIX,
        "JWT_SECRET": "bench-secret-" + "k" * 32,
        "LOG_LEVEL": "warning",
    }
    started = time.perf_counter()
    done = subprocess.run(
        pinned([PYTHON, "-m", "quart_app", "rebuild"], cpus),
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        return f"failed after {elapsed:.1f} s: {lines[-1]}"
    return elapsed


def one_run(
    variant: str, code: str, workdir: str, redis: Redis, args: argparse.Namespace
) -> dict[str, Any]:
    client = redis_sync.Redis.from_url(redis.url, socket_timeout=120)
    client.flushall(asynchronous=True)  # a 1M-player board freed in the background
    fill_s = rebuild_once(code, workdir, redis.url, args.rebuild_cpu)
    size = int(client.zcard(PREFIX + "board"))
    watcher = BoardWatcher(redis.url)
    try:
        replace_s = rebuild_once(code, workdir, redis.url, args.rebuild_cpu)
    finally:
        watcher.stop()
    after = int(client.zcard(PREFIX + "board"))
    client.close()
    print(f"{variant}: fill {fill_s}, replace {replace_s}, smallest board {watcher.smallest}")
    return {
        "variant": variant,
        "fill_s": fill_s,
        "replace_s": replace_s,
        "board_after_fill": size,
        "board_after_replace": after,
        "smallest_board_seen_during_replace": watcher.smallest,
        "slowest_board_read_during_replace_ms": watcher.slowest_ms,
        "watcher_polls": watcher.polls,
    }


def _median_or_failure(values: list[float | str]) -> float | str | None:
    failed = [v for v in values if isinstance(v, str)]
    return failed[0] if failed else median([v for v in values if not isinstance(v, str)])


async def main(args: argparse.Namespace) -> dict[str, Any]:
    variants = dict(item.split("=", 1) for item in args.variants.split(","))
    variants = {name: str((ROOT / code).resolve()) for name, code in variants.items()}
    workdir = tempfile.mkdtemp(prefix="bench-rebuild-")
    redis = None
    try:
        seed_s = await seed_sqlite(workdir, args.players)
        redis = Redis(args.redis_cpu)
        runs = [
            await asyncio.to_thread(one_run, name, code, workdir, redis, args)
            for _ in range(args.repeat)
            for name, code in variants.items()
        ]
    finally:
        if redis:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    summary = []
    for name in variants:
        mine = [r for r in runs if r["variant"] == name]
        smallest = [r["smallest_board_seen_during_replace"] for r in mine]
        summary.append(
            {
                "variant": name,
                "fill_s": _median_or_failure([r["fill_s"] for r in mine]),
                "replace_s": _median_or_failure([r["replace_s"] for r in mine]),
                "smallest_board_seen": min(s for s in smallest if s is not None),
                "slowest_read_ms": max(r["slowest_board_read_during_replace_ms"] for r in mine),
                "whole_after": all(
                    r["board_after_fill"] == r["board_after_replace"] == args.players for r in mine
                ),
            }
        )
    print(f"\nrankpulse rebuild into Redis, {args.players:,} players (median of {args.repeat})")
    print_table(
        ["variant", "fill s", "replace s", "smallest board seen", "slowest read ms", "whole"],
        [
            [
                s["variant"],
                s["fill_s"],
                s["replace_s"],
                s["smallest_board_seen"],
                s["slowest_read_ms"],
                s["whole_after"],
            ]
            for s in summary
        ],
    )
    for run in runs:
        for key in ("fill_s", "replace_s"):
            if isinstance(run[key], str):
                print(f"{run['variant']} {key}: {run[key]}")
    return {
        "bench": "rebuild",
        "players": args.players,
        "seed_s": seed_s,
        "rebuild_cpu": args.rebuild_cpu,
        "redis_cpu": args.redis_cpu,
        "machine": machine(),
        "summary": summary,
        "runs": runs,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default="after=.", help="name=checkout,... (interleaved)")
    parser.add_argument("--rebuild-cpu", default="0", help="taskset -c for `rankpulse rebuild`")
    parser.add_argument("--redis-cpu", default="1", help="taskset -c for redis-server")
    parser.add_argument("--json", default="bench/out/rebuild.json")
    return parser.parse_args()


if __name__ == "__main__":
    run_benchmark(main, parse_args())
