"""A Redis-engine page read, the two ways, interleaved in one process on one redis-server:

- `decoded`: the log's head, `board_page` (one reply string per row, each row decoded into a
  BoardEntry), the entries made into dicts and `json.dumps`ed with the cursor: the way
  GET /api/leaderboard worked before board_page_json;
- `pre-joined`: `board_page_json` (board_page_json.lua: the head and the entries' JSON text
  in one script call), put together with the cursor by string formatting: the way it works now.

No HTTP: what the route adds is the same for both. Per variant: wall time per read (p50, over
--reads random pages of 100 rows among --players) and this process's CPU per read; the
variants alternate in rounds, so a neighbour's load hits both alike. Prints the ratios.

    .venv/bin/python bench/page_encoding.py --players 1000000 --reads 300 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from typing import Any

from _common import Redis, machine, median, print_table, run_benchmark

from quart_app.engine.cursor import encode
from quart_app.engine.redis import RedisEngine
from quart_app.services.leaderboard import entries

PAGE = 100
VARIANTS = ("decoded", "pre-joined")


async def _decoded(engine: RedisEngine, offset: int) -> str:
    cursor = encode(engine.epoch, await engine.head())
    ranked, total = await engine.board_page(offset, PAGE)
    return json.dumps({"entries": entries(ranked), "total": total, "cursor": cursor})


async def _pre_joined(engine: RedisEngine, offset: int) -> str:
    head, rows, total = await engine.board_page_json(offset, PAGE)
    cursor = encode(engine.epoch, head)
    return f'{{"entries":{rows},"total":{total},"cursor":{json.dumps(cursor)}}}'


async def _load_board(engine: RedisEngine, players: int) -> None:
    from quart_app.domain.board import BoardEntry

    board = [
        BoardEntry(
            f"p{i:07d}", f"player {i}", 1200.0 + (i % 4000) / 7, i % 50, i % 40, i % 3, i % 93, 1
        )  # fmt: skip
        for i in range(players)
    ]

    async def load() -> list[BoardEntry]:
        return board

    await engine.board_replace(load)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpu.split(",")})
    redis = Redis(args.server_cpu)
    engine = RedisEngine(redis.url)
    try:
        await engine.start()
        await _load_board(engine, args.players)
        readers = {"decoded": _decoded, "pre-joined": _pre_joined}
        rng = random.Random(1)
        # The two agree (what the client gets is the same JSON, spacing aside).
        offset = rng.randrange(args.players - PAGE)
        answers = [json.loads(await readers[v](engine, offset)) for v in VARIANTS]
        assert answers[0] == answers[1], "the variants disagree"
        wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
        cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant in VARIANTS:
                read = readers[variant]
                offsets = [rng.randrange(args.players - PAGE) for _ in range(args.reads)]
                lat = []
                cpu_start = time.process_time()
                for offset in offsets:
                    sent = time.perf_counter()
                    await read(engine, offset)
                    lat.append((time.perf_counter() - sent) * 1000)
                cpu[variant].append((time.process_time() - cpu_start) * 1000 / args.reads)
                wall[variant].append(statistics.median(lat))
    finally:
        await engine.stop()
        redis.stop()
    summary = {
        v: {"p50_ms": median(wall[v]), "cpu_ms_per_read": median(cpu[v]), "rounds_p50_ms": wall[v]}
        for v in VARIANTS
    }
    print(
        f"page reads of {PAGE} rows among {args.players:,} players, {args.reads} per round, "
        f"median of {args.rounds} rounds; redis on CPU {args.server_cpu}, client on CPU "
        f"{args.client_cpu}"
    )
    print_table(
        ("variant", "p50 ms", "client CPU ms/read"),
        [(v, summary[v]["p50_ms"], summary[v]["cpu_ms_per_read"]) for v in VARIANTS],
    )
    old, new = summary["decoded"], summary["pre-joined"]
    print(
        f"pre-joined / decoded: p50 x{new['p50_ms'] / old['p50_ms']:.2f}, "
        f"CPU x{new['cpu_ms_per_read'] / old['cpu_ms_per_read']:.2f}"
    )
    return {"benchmark": "page_encoding", "machine": machine(), "args": vars(args),
            "summary": summary}  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=300, help="page reads per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server-cpu", default="0", help="taskset -c for redis-server")
    parser.add_argument("--client-cpu", default="1", help="CPUs for this process")
    parser.add_argument("--json", default="bench/out/page_encoding.json")
    return parser.parse_args()


if __name__ == "__main__":
    run_benchmark(main, parse_args())
