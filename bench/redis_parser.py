"""redis-py's reply parsers side by side: the client CPU of one call, with hiredis (C) and with
redis-py's own pure-Python RESP2 parser, on uvloop against a throwaway redis-server.

What is timed is this process's CPU per call (the server runs pinned elsewhere): a script
whose reply is a small nested array (as the admission and publish scripts'), a plain GET, and
a script call inside a pipeline of 100 (as a turn's admissions or a results group).

    .venv/bin/python bench/redis_parser.py [--calls 20000] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import redis.asyncio as redis
from _common import Redis, machine, median, print_table, run_benchmark
from redis.asyncio.connection import _AsyncHiredisParser, _AsyncRESP2Parser

SCRIPT = (
    "redis.call('HINCRBY', KEYS[1], ARGV[1], 1) "
    "return {1, 2, 'admitted', redis.call('HGETALL', KEYS[1])}"
)
PARSERS = {"hiredis": _AsyncHiredisParser, "python": _AsyncRESP2Parser}


async def _per_call(url: str, parser: Any, calls: int) -> dict[str, float]:
    pool = redis.ConnectionPool.from_url(url, parser_class=parser)
    client = redis.Redis(connection_pool=pool)
    try:
        sha = await client.script_load(SCRIPT)
        await client.set("key", "v" * 50)
        for index in range(500):  # warm-up
            await client.evalsha(sha, 1, "hash", f"f{index % 20}")
        started = time.process_time()
        for index in range(calls):
            await client.evalsha(sha, 1, "hash", f"f{index % 20}")
        script = time.process_time() - started
        started = time.process_time()
        for _ in range(calls):
            await client.get("key")
        get = time.process_time() - started
        pipeline = client.pipeline(transaction=False)
        started = time.process_time()
        for _ in range(calls // 100):
            for index in range(100):
                pipeline.evalsha(sha, 1, "hash", f"f{index % 20}")
            await pipeline.execute()
        piped = time.process_time() - started
    finally:
        await client.aclose()
    micro = 1e6 / calls
    return {
        "script_us": script * micro,
        "get_us": get * micro,
        "pipelined_script_us": piped * micro,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    server = Redis(cpus=args.redis_cpu)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in PARSERS}
    try:
        for _ in range(args.repeat):  # interleaved: both parsers see the same machine
            for name, parser in PARSERS.items():
                runs[name].append(await _per_call(server.url, parser, args.calls))
    finally:
        server.stop()
    rows = []
    for name, measured in runs.items():
        rows.append(
            [name] + [median([run[key] for run in measured]) for key in measured[0]]  # type: ignore[misc]
        )
    print(f"client CPU per call, µs, medians of {args.repeat}")
    print_table(["parser", "script", "GET", "script in a pipeline of 100"], rows)
    return {"machine": machine(), "args": vars(args), "runs": runs}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--redis-cpu", default="1")
    parser.add_argument("--json", default="bench/out/redis_parser.json")
    run_benchmark(main, parser.parse_args())
