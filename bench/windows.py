"""Rank windows at scale (issue 8): --subscribers SSE streams spread over --windows different
`leaderboard:around:{id}:{radius}` windows on one instance (memory engine, SQLite), while
--rate results/s are played among --players players seeded in bulk. Measures how late each
window change reaches its subscribers, and the instance's CPU.

Latency of a window: for each row a window event changed (a (player, rating) pair it did not
show before), its arrival at the subscriber minus the `ts` of the `leaderboard:update` that
gave the player that rating (both clocks are this machine's). One subscriber per window is
measured (parsing 10,000 streams in the generator would measure the generator); the others
count window events only, to show each window reached all its subscribers. A row rated
before the previous window arrived is not counted (it moved in as ranks shifted).

    .venv/bin/python bench/windows.py                    # 1,000,000 players, 30 s
    .venv/bin/python bench/windows.py --players 100000 --duration 10
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
import urllib.request
from typing import Any

from _common import (
    Client,
    Server,
    fmt,
    machine,
    print_table,
    run_benchmark,
    seed_sqlite,
    target,
    token,
    wait_until,
)

from quart_app.loadtest.sysinfo import ServerProbe
from quart_app.store.seed import seeded_id

TARGET_P99_MS = 250.0


class Stream(asyncio.Protocol):
    """One SSE subscriber on a raw socket; measured ones parse their window events."""

    def __init__(self, bench: Bench, measured: bool) -> None:
        self.bench = bench
        self.measured = measured
        self.buffer = b""
        self.windows = 0
        self.shown: set[tuple[str, float]] | None = None
        self.shown_at = 0.0  # when that window arrived (ms since the epoch)
        self.opened = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.opened.done() and b"stream:open" in data:
            self.opened.set_result(None)
        self.windows += data.count(b"event: leaderboard:window\n")
        if not self.measured and self.bench.global_stream is not self:
            return
        self.buffer += data
        *frames, self.buffer = self.buffer.split(b"\n\n")
        for frame in frames:
            for line in frame.split(b"\n"):
                if line.startswith(b"data: {"):
                    self.bench.on_envelope(self, json.loads(line[6:]), now)


class Bench:
    def __init__(self) -> None:
        self.rating_ts: dict[tuple[str, float], int] = {}
        self.latencies_ms: list[float] = []
        self.unmatched = 0
        self.global_stream: Stream | None = None

    def on_envelope(self, stream: Stream, envelope: dict[str, Any], now: float) -> None:
        if envelope["event"] == "leaderboard:update":
            for change in envelope["data"]["changes"]:
                self.rating_ts[(change["player_id"], change["rating"])] = envelope["ts"]
        elif envelope["event"] == "leaderboard:window":
            shown = {(e["player_id"], e["rating"]) for e in envelope["data"]["entries"]}
            if stream.shown is not None:
                for row in shown - stream.shown:
                    ts = self.rating_ts.get(row)
                    if ts is None or ts < stream.shown_at:
                        # Rated before the last window came: it moved in by someone else's
                        # result (ranks shift), not a change this window is late with.
                        self.unmatched += 1
                    else:
                        self.latencies_ms.append(now * 1000 - ts)
            stream.shown, stream.shown_at = shown, now * 1000


async def open_stream(bench: Bench, port: int, rooms: str, measured: bool) -> Stream:
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(lambda: Stream(bench, measured), "127.0.0.1", port)
    request = (
        f"GET /api/events?rooms={rooms}&access_token={token('bench-watcher', '')} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
    )
    stream.transport.write(request.encode())  # type: ignore[attr-defined]
    await asyncio.wait_for(stream.opened, 60)
    return stream


def _ready_with_board(url: str, players: int) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            if response.status != 200:
                return False
        request = urllib.request.Request(
            url + "/api/leaderboard?limit=1",
            headers={"Authorization": f"Bearer {token('bench-watcher', '')}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(json.loads(response.read())["total"] == players)
    except OSError:
        return False


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="bench-windows-")
    rng = random.Random(8)
    server = None
    streams: list[Stream] = []
    try:
        seed_s = await seed_sqlite(workdir, args.players)
        spawned = time.perf_counter()
        server = Server(workdir, cpus=args.server_cpu)
        wait_until(lambda: _ready_with_board(server.url, args.players), 600, "the board")
        startup_s = time.perf_counter() - spawned
        port = target(server.url).port
        bench = Bench()
        bench.global_stream = await open_stream(bench, port, "leaderboard:global", False)
        centres = [seeded_id("s", i) for i in rng.sample(range(args.players), args.windows)]
        rooms = [f"leaderboard:around:{c}:{args.radius}" for c in centres]
        opened = time.perf_counter()
        for start in range(0, args.subscribers, 200):
            streams += await asyncio.gather(
                *(
                    open_stream(bench, port, rooms[i % len(rooms)], i < len(rooms))
                    for i in range(start, min(start + 200, args.subscribers))
                )
            )
        open_s = time.perf_counter() - opened
        # Matches among the window centres' neighbourhood and anyone: half the results
        # involve a centre (they move it), half are random (they cross windows or not).
        total = int(args.rate * args.duration)
        pairs = []
        for i in range(total):
            a = rng.choice(centres) if i % 2 == 0 else seeded_id("s", rng.randrange(args.players))
            b = seeded_id("s", rng.randrange(args.players))
            pairs.append((f"w{i}", [a, b] if a != b else [a, seeded_id("s", 0)]))
        admin = token("bench-admin", "matches:write admin")
        clients = [Client(target(server.url), admin) for _ in range(4)]
        for client in clients:
            await client.open()
        for i, (match_id, pair) in enumerate(pairs):
            await clients[i % 4].post("/api/matches", {"match_id": match_id, "player_ids": pair})
        probe = ServerProbe([server.pid])
        cpu0, wall0 = probe.cpu_seconds() or {}, time.perf_counter()
        statuses: list[int] = []

        async def result(client: Client, match_id: str, winner: str) -> None:
            status, _ = await client.post(f"/api/matches/{match_id}/result", {"winner_id": winner})
            statuses.append(status)

        pending: list[asyncio.Task[None]] = []
        busy = [asyncio.Lock() for _ in clients]

        async def send(index: int, match_id: str, winner: str) -> None:
            async with busy[index % 4]:
                await result(clients[index % 4], match_id, winner)

        for i, (match_id, pair) in enumerate(pairs):
            due = wall0 + i / args.rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            pending.append(asyncio.create_task(send(i, match_id, rng.choice(pair))))
        await asyncio.gather(*pending)
        await asyncio.sleep(2.0)  # the last windows (due within 1 s: PROTOCOL 2)
        cpu1, wall1 = probe.cpu_seconds() or {}, time.perf_counter()
        cpu_percent = (
            100 * (cpu1[server.pid] - cpu0[server.pid]) / (wall1 - wall0) if cpu0 and cpu1 else None
        )
        for client in clients:
            client.close()
        # Every subscriber of a window got as many window events as its measured one.
        by_room: dict[str, set[int]] = {}
        for i, stream in enumerate(streams):
            by_room.setdefault(rooms[i % len(rooms)], set()).add(stream.windows)
        uneven = sum(1 for counts in by_room.values() if len(counts) > 1)
        p50 = percentile(bench.latencies_ms, 50)
        p99 = percentile(bench.latencies_ms, 99)
        out = {
            "players": args.players,
            "subscribers": args.subscribers,
            "windows": args.windows,
            "radius": args.radius,
            "rate": args.rate,
            "duration_s": args.duration,
            "results_ok": sum(1 for s in statuses if s == 200),
            "results": len(statuses),
            "seed_s": seed_s,
            "startup_s": startup_s,
            "open_s": open_s,
            "window_events_delivered": sum(s.windows for s in streams) - len(streams),
            "window_changes_measured": len(bench.latencies_ms),
            "rows_without_ts": bench.unmatched,
            "rooms_with_uneven_counts": uneven,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "latency_max_ms": max(bench.latencies_ms) if bench.latencies_ms else None,
            "server_cpu_percent": cpu_percent,
            "pass": p99 is not None and p99 <= TARGET_P99_MS and uneven == 0,
            "machine": machine(),
        }
        print_table(
            ["measure", "value"],
            [
                [
                    "players / subscribers / windows",
                    f"{args.players:,} / {args.subscribers:,} / "
                    f"{args.windows:,} (radius {args.radius})",
                ],
                ["results/s asked, ok", f"{args.rate:g}, {out['results_ok']}/{out['results']}"],
                [
                    "seed, start-up, subscribe (s)",
                    f"{fmt(seed_s)}, {fmt(startup_s)}, {fmt(open_s)}",
                ],
                ["window events delivered", f"{out['window_events_delivered']:,}"],
                ["window rows measured", f"{len(bench.latencies_ms):,}"],
                [
                    "latency p50 / p99 / max (ms)",
                    f"{fmt(p50)} / {fmt(p99)} / {fmt(out['latency_max_ms'])}",
                ],
                ["target p99 (ms)", f"<= {TARGET_P99_MS:g}: {'PASS' if out['pass'] else 'FAIL'}"],
                ["windows whose subscribers differ", uneven],
                ["server CPU (% of one core)", fmt(cpu_percent)],
            ],
        )
        return out
    finally:
        for stream in streams:
            stream.transport.close()  # type: ignore[attr-defined]
        if server:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int, default=1_000_000)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--windows", type=int, default=1_000)
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--rate", type=float, default=50.0, help="results per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of results")
    parser.add_argument("--server-cpu", default="0", help="taskset CPU list for the server")
    parser.add_argument("--client-cpu", default="1", help="CPU for this generator")
    parser.add_argument("--json", default="docs/benchmarks/windows.json", help="result JSON")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.client_cpu:
        os.sched_setaffinity(0, {int(c) for c in arguments.client_cpu.split(",")})
    run_benchmark(main, arguments)
