"""Where a match result's time goes: a `rankpulse serve` (SQLite, memory engine, --players
seeded in bulk) under cProfile during the timed phase of bench/results.py's workload.

Seeds (or reuses --db, a migrated and seeded SQLite file, copied), starts the server under
bench/profiled_serve.py pinned to --server-cpu, warms up, creates --matches matches, opens an
SSE subscriber of `matches`, then profiles only the results, POSTed over --concurrency
keep-alive connections (the client pinned to --client-cpu). Prints the time per result by
part of the request (inclusive time of the functions that own each part), the top functions,
and the cyclic garbage collector's passes; writes the raw stats next to --out.

    .venv/bin/python bench/profile_results.py --players 1000000 --matches 2000 \
        --concurrency 16 --out docs/benchmarks/profile-results-1m

cProfile slows Python code by a factor of about 1.5-2: read the parts as shares, and the
unprofiled CPU per result from bench/results.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    PYTHON,
    ROOT,
    SECRET,
    free_port,
    pinned,
    seed_sqlite,
    wait_until,
)
from results import Subscriber, _drive, _ready_with_board

from quart_app.loadtest.sysinfo import ServerProbe
from quart_app.store.seed import seeded_id

# (part, file suffix, function name): the part's time is the inclusive time of its function
# (cProfile counts each resume of a coroutine as a call, so awaiting is not included).
PARTS: list[tuple[str, str, str]] = [
    ("whole ASGI request (Hypercorn -> Quart -> answer)", "quart/app.py", "handle_request"),
    ("  Quart dispatch of the view (incl. view)", "quart/app.py", "full_dispatch_request"),
    ("    view match_result (incl. awaiting writer: CPU only)", "web/api.py", "match_result"),
    ("      token check (identify/require_scope)", "web/requests.py", "require_scope"),
    ("      body read + JSON + pydantic", "web/requests.py", "read_body"),
    ("      answer JSON (json_response)", "web/api.py", "json_response"),
    ("  Quart finalize_request (Response, after_request)", "quart/app.py", "finalize_request"),
    ("writer: group commit (plan + SQL)", "services/result_writer.py", "_commit"),
    ("  SQL apply (SQLite, on the loop)", "store/result_sql.py", "_apply"),
    ("    ELO plan (plan_results)", "services/result_plan.py", "plan_results"),
    ("publisher: publish + answer", "services/result_writer.py", "_publish"),
    ("  engine publish_many", "store/outbox.py", "publish_many"),
    ("  outbox delete_published", "store/result_sql.py", "delete_published"),
    ("raw result route (web/result_route.py, incl. its answer)", "web/result_route.py", "__call__"),
    ("  its answer: one socket write", "web/result_route.py", "_respond"),
    ("Hypercorn + h11 reading requests", "hypercorn/protocol/h11.py", "_handle_events"),
    ("  events encoded (engine/base.py build_event)", "engine/base.py", "build_event"),
    ("  outbox payload (Publication.to_json)", "domain/publication.py", "to_json"),
    ("SSE delivery to the subscriber (hub fan-out)", "engine/hub.py", "_fan_out"),
]


def _inclusive(stats: pstats.Stats, suffix: str, name: str) -> tuple[float, int]:
    seconds, calls = 0.0, 0
    for (path, _line, func), (_cc, nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func == name and path.endswith(suffix):
            seconds += ct
            calls += nc
    return seconds, calls


def summarize(path: str, results: int) -> dict[str, Any]:
    stats = pstats.Stats(path)
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in stats.stats.values())  # type: ignore[attr-defined]
    parts = []
    for label, suffix, name in PARTS:
        seconds, calls = _inclusive(stats, suffix, name)
        parts.append(
            {
                "part": label,
                "function": f"{suffix}:{name}",
                "ms_per_result": 1000 * seconds / results,
                "calls": calls,
            }
        )
    rows = sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: item[1][2],
        reverse=True,
    )
    top = [
        {
            "function": f"{Path(path).name}:{line}:{func}",
            "tottime_ms_per_result": 1000 * tt / results,
            "cumtime_ms_per_result": 1000 * ct / results,
            "calls_per_result": nc / results,
        }
        for (path, line, func), (_cc, nc, tt, ct, _callers) in rows[:40]
    ]
    return {"profiled_ms_per_result": 1000 * total / results, "parts": parts, "top": top}


async def main(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {int(c) for c in args.client_cpu.split(",")})
    workdir = tempfile.mkdtemp(prefix="bench-profile-")
    database = Path(workdir) / "bench.db"
    if args.db:
        shutil.copy(args.db, database)
    else:
        seconds = await seed_sqlite(workdir, args.players, args.code)
        print(f"seeded {args.players:,} players in {seconds:.1f} s", flush=True)
        if args.keep_db:
            shutil.copy(database, args.keep_db)
    out = str(Path(args.out).resolve()) + ".prof"
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "JWT_SECRET": SECRET,
        "LOG_LEVEL": "warning",
        "MAX_CONNECTIONS": "0",
        "MAX_CONNECTIONS_PER_USER": "0",
        "RATE_LIMIT_WRITES": "0",
        "RATE_LIMIT_PUBLISH": "0",
        "PYTHONPATH": args.code,
        "PROFILE_OUT": out,
    }
    env.pop("REDIS_URL", None)
    wrapper = str(ROOT / "bench" / "profiled_serve.py")
    command = [PYTHON, wrapper, "serve", "--port", str(port)]
    with open(Path(workdir) / "server.log", "ab") as log:
        server = subprocess.Popen(
            pinned(command, args.server_cpu),
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    subscriber = None
    try:
        wait_until(lambda: _ready_with_board(url, args.players), 600, "/readyz and the board")
        warm = [seeded_id("s", 0), seeded_id("s", args.players - 1)]
        await _drive(url, 1, [("/api/matches", {"match_id": "warm", "player_ids": warm})], {201})
        await _drive(url, 1, [("/api/matches/warm/result", {"winner_id": warm[0]})], {200})
        rng = random.Random(1)
        pairs = [
            [seeded_id("s", i) for i in rng.sample(range(args.players), 2)]
            for _ in range(args.matches)
        ]
        ids = [f"p-{i}" for i in range(len(pairs))]
        creates = [
            ("/api/matches", {"match_id": m, "player_ids": p})
            for m, p in zip(ids, pairs, strict=True)
        ]
        await _drive(url, args.concurrency, creates, {201})
        results = [
            (f"/api/matches/{m}/result", {"winner_id": rng.choice(p)})
            for m, p in zip(ids, pairs, strict=True)
        ]
        subscriber = await Subscriber.open(url)
        probe = ServerProbe([server.pid])
        # The wrapper is the server process itself (taskset execs it).
        if args.profile:
            server.send_signal(signal.SIGUSR1)
        cpu0, wall0 = probe.cpu_seconds() or {}, time.perf_counter()
        timed = await _drive(url, args.concurrency, results, {200})
        delivered = await subscriber.wait_for(len(results), 60.0)
        cpu1, wall1 = probe.cpu_seconds() or {}, time.perf_counter()
        cpu = cpu1.get(server.pid, 0) - cpu0.get(server.pid, 0) if cpu0 and cpu1 else None
        if not args.profile:
            per_result = 1000 * cpu / len(results) if cpu else float("nan")
            print(
                f"{args.code}: {len(results)} results at c={args.concurrency}: "
                f"{timed['per_s']:.0f}/s, p50 {timed['latency_ms']['p50']:.1f} ms, "
                f"server CPU {per_result:.3f} ms/result, delivered {delivered}, "
                f"errors {timed['errors']}",
                flush=True,
            )
            return
        server.send_signal(signal.SIGUSR2)
        wait_until(lambda: Path(out + ".gc.json").exists(), 120, "the profile")
        time.sleep(0.5)  # the stats file is written before the gc figures; both complete
        summary = summarize(out, len(results))
        gc_figures = json.loads(Path(out + ".gc.json").read_text())
        report = {
            "players": args.players,
            "results": len(results),
            "concurrency": args.concurrency,
            "results_per_s_profiled": timed["per_s"],
            "errors": timed["errors"],
            "delivered": delivered,
            "server_cpu_ms_per_result_profiled": 1000 * cpu / len(results) if cpu else None,
            "server_cpu_percent": 100 * cpu / (wall1 - wall0) if cpu else None,
            "gc": {
                **gc_figures,
                "ms_per_result": [1000 * s / len(results) for s in gc_figures["seconds"]],
            },
            **summary,
        }
        Path(args.out + ".json").write_text(json.dumps(report, indent=1))
        print(
            f"{len(results)} results at c={args.concurrency}: {timed['per_s']:.0f}/s profiled, "
            f"delivered {delivered}, errors {timed['errors']}, server CPU "
            f"{report['server_cpu_ms_per_result_profiled']:.2f} ms/result "
            f"({report['server_cpu_percent']:.0f}%), profiled "
            f"{summary['profiled_ms_per_result']:.2f} ms/result"
        )
        print(
            "gc passes by generation:",
            gc_figures["passes"],
            "ms/result:",
            [round(v, 3) for v in report["gc"]["ms_per_result"]],
            "tracked objects:",
            gc_figures["tracked_objects"],
            "frozen:",
            gc_figures["frozen"],
        )
        for part in summary["parts"]:
            print(f"  {part['ms_per_result']:7.3f} ms  {part['calls']:7d}  {part['part']}")
        print("top by own time (ms/result own, cumulative, calls/result):")
        for row in summary["top"][:30]:
            print(
                f"  {row['tottime_ms_per_result']:7.3f} {row['cumtime_ms_per_result']:7.3f} "
                f"{row['calls_per_result']:6.1f}  {row['function']}"
            )
    finally:
        if subscriber:
            subscriber.close()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, default=1_000_000)
    parser.add_argument("--matches", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--db", help="a migrated, seeded SQLite file to copy instead of seeding")
    parser.add_argument("--keep-db", help="copy the freshly seeded file here (for --db later)")
    parser.add_argument("--code", default=str(ROOT), help="the checkout whose quart_app runs")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--out", default="bench/out/profile-results")
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="no cProfile: only the server's CPU per result (compare --code variants)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
