"""The Redis engine's stream bookkeeping when N streams arrive, then end, all at once: the CPU
this process spends admitting them (per-user limit on) and releasing them, per stream.

A reconnect storm arrives as admissions; a network blip or a drain ends thousands of streams
in one moment, as releases. For each repeat and each code variant (--variants name=dir,
interleaved), a child process (pinned to --cpu) runs an engine of that code against one
redis-server (pinned to --redis-cpu), admits N streams of N/4 users concurrently, releases them
concurrently, --rounds times; the median round is its result. Medians over repeats; JSON.

    .venv/bin/python bench/stream_counts.py --n 10000 --repeat 3 --variants after=.,before=/tmp/b
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from typing import Any

from _common import PYTHON, ROOT, Redis, machine, median, pinned, print_table, run_benchmark

CHILD = """
import asyncio, json, statistics, sys, time
from quart_app.engine.redis import RedisEngine

async def main(url, n, rounds):
    engine = RedisEngine(url)
    await engine.start()
    subjects = [f"s:p{i % max(1, n // 4)}" for i in range(n)]
    admit, release = [], []
    for _ in range(rounds):
        began = time.process_time()
        admitted = await asyncio.gather(*(engine.stream_admit(s, 1_000_000) for s in subjects))
        admit.append(time.process_time() - began)
        assert all(admitted)
        began = time.process_time()
        await asyncio.gather(*(engine.stream_release(s) for s in subjects))
        release.append(time.process_time() - began)
    await engine.stop()
    medians = {"admit_s": statistics.median(admit), "release_s": statistics.median(release)}
    print(json.dumps(medians))

import uvloop  # (as the server runs)
uvloop.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def run_once(code: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": code}
    command = pinned([PYTHON, "-c", CHILD, url, str(args.n), str(args.rounds)], args.cpu)
    # (run in `code`: `python -c` puts the working directory first on the path)
    done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    variants = dict(item.split("=", 1) for item in args.variants.split(","))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    redis = Redis(cpus=args.redis_cpu)
    try:
        for repeat in range(args.repeat):
            for name, code in variants.items():
                result = run_once(str((ROOT / code).resolve()), redis.url, args)
                runs[name].append(result)
                print(f"[{repeat + 1}/{args.repeat}] {name:8} {json.dumps(result)}", flush=True)
    finally:
        redis.stop()
    rows, summary = [], {}
    for name, results in runs.items():
        ok = [r for r in results if "error" not in r]
        admit = median([r["admit_s"] * 1e6 / args.n for r in ok])
        release = median([r["release_s"] * 1e6 / args.n for r in ok])
        summary[name] = {"admit_us_per_stream": admit, "release_us_per_stream": release}
        rows.append([name, admit, release, f"{len(ok)}/{len(results)}"])
    print(f"medians of {args.repeat}; {args.n} streams at once, CPU of the instance's process")
    print_table(["variant", "admit µs/stream", "release µs/stream", "ok"], rows)
    return {"args": vars(args), "machine": machine(), "runs": runs, "summary": summary}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default="after=.")
    parser.add_argument("--cpu", default="0")
    parser.add_argument("--redis-cpu", default="1")
    parser.add_argument("--json", default="bench/out/stream-counts.json")
    run_benchmark(main, parser.parse_args())
