"""Start-up of an instance (memory engine, SQLite) with N players already in the database.

Seeds --players players once (store/seed.py, one statement), then for each repeat and each
code variant (--variants name=dir: the checkout whose quart_app the server runs, so "before"
and "after" are measured interleaved in one run) starts a fresh `rankpulse serve` on a copy
of that database, pinned to --server-cpu, and times from the spawn:
- ready: /readyz answers 200;
- served: GET /api/leaderboard?limit=10 answers the whole board's total (correct while the
  board loads: from SQL until the engine has it);
- loaded: the server logs "board rebuilt from SQL" (the in-memory board is in);
and one GET /api/players/{id} of a mid-board player right after ready (its latency, and
that its rank is the one the loaded board gives later). Medians over the repeats; JSON.

    .venv/bin/python bench/startup.py --players 1000000 --repeat 3 \
        --variants before=/tmp/before,after=. --json docs/benchmarks/startup-1m.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from _common import ROOT, Server, machine, median, print_table, run_benchmark, seed_sqlite, token

from quart_app.store.seed import seeded_id

_LOADED_LINE = "board rebuilt from SQL"


def _get(url: str, bearer: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if bearer:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None
    except OSError:
        return 0, None


def _until(check: Any, timeout: float, what: str) -> float:
    """Poll `check` every 20 ms; the perf_counter when it first held."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if check():
            return time.perf_counter()
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def one_run(variant: str, code: str, seeded_db: str, args: argparse.Namespace) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="bench-startup-")
    server = None
    try:
        shutil.copy(seeded_db, os.path.join(workdir, "bench.db"))
        reader = token("bench-reader", "")
        spawned = time.perf_counter()
        server = Server(
            workdir,
            cpus=args.server_cpu,
            env={"PYTHONPATH": code, "LOG_LEVEL": "info"},
        )
        url, log_path = server.url, Path(server.log_path)
        ready = _until(lambda: _get(url + "/readyz")[0] == 200, 600, "/readyz 200")
        probe_id = seeded_id("s", args.players // 2)
        asked = time.perf_counter()
        status, player = _get(f"{url}/api/players/{probe_id}", reader)
        player_read_ms = (time.perf_counter() - asked) * 1000
        served = _until(
            lambda: (
                (_get(url + "/api/leaderboard?limit=10", reader)[1] or {}).get("total")
                == args.players
            ),
            600,
            "the whole board served",
        )
        loaded = _until(lambda: _LOADED_LINE in log_path.read_text(), 600, "the board loaded")
        _, after = _get(f"{url}/api/players/{probe_id}", reader)
        return {
            "variant": variant,
            "ready_s": ready - spawned,
            "served_s": served - spawned,
            "loaded_s": loaded - spawned,
            "player_read_after_ready_ms": player_read_ms,
            "player_read_status": status,
            "rank_while_loading_equals_loaded": bool(
                player and after and player["rank"] == after["rank"]
            ),
        }
    finally:
        if server:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    variants = dict(item.split("=", 1) for item in args.variants.split(","))
    variants = {name: str((ROOT / code).resolve()) for name, code in variants.items()}
    seeddir = tempfile.mkdtemp(prefix="bench-startup-seed-")
    try:
        seed_s = await seed_sqlite(seeddir, args.players)
        seeded_db = os.path.join(seeddir, "bench.db")
        runs = [
            await asyncio.to_thread(one_run, name, code, seeded_db, args)
            for _ in range(args.repeat)
            for name, code in variants.items()
        ]
    finally:
        shutil.rmtree(seeddir, ignore_errors=True)
    summary = []
    for name in variants:
        mine = [r for r in runs if r["variant"] == name]
        summary.append(
            {
                "variant": name,
                **{
                    key: median([r[key] for r in mine])
                    for key in ("ready_s", "served_s", "loaded_s", "player_read_after_ready_ms")
                },
                "ranks_consistent": all(r["rank_while_loading_equals_loaded"] for r in mine),
            }
        )
    print(f"\nstart-up, memory engine, SQLite, {args.players:,} players (median of {args.repeat})")
    print_table(
        ["variant", "ready s", "board served s", "board loaded s", "player read ms", "ranks ok"],
        [
            [
                s["variant"],
                s["ready_s"],
                s["served_s"],
                s["loaded_s"],
                s["player_read_after_ready_ms"],
                s["ranks_consistent"],
            ]
            for s in summary
        ],
    )
    return {
        "bench": "startup",
        "players": args.players,
        "seed_s": seed_s,
        "server_cpu": args.server_cpu,
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
    parser.add_argument("--server-cpu", default="0", help="taskset -c for the server")
    parser.add_argument("--json", default="bench/out/startup.json")
    return parser.parse_args()


if __name__ == "__main__":
    run_benchmark(main, parse_args())
