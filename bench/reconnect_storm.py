"""Reconnect storm (issue 10): N SSE clients arriving at once, and the server CPU each costs.

For each source tree (--variants) and engine (--engines memory,redis,floor), starts a fresh
`python -m quart_app serve` pinned to --server-cpu, runs the anchor's generator
(`loadgen.js --kind sse`, 200 clients every 20 ms, one token for all) pinned to --gen-cpu, and
reports the time to connect all N, new streams per second, and the server's CPU time (from
/proc/<pid>/stat over the run) per new stream. With --kind poll, N long-pollers at --rate
events/s instead, and server CPU per delivered poll answer. Variants interleaved per repeat;
medians printed. On the Redis engine the per-user limit is on (MAX_CONNECTIONS_PER_USER
1,000,000): every stream is admitted through Redis, as in production. The `floor` engine is
not this service but bench/storm_floor.py, which only accepts and writes a canned stream:open:
its rate is what the generator itself can open on this machine. The `socketio` engine is the
reference server of the anchor, stormed over its own WebSocket transport (or its polling, with
--kind poll), for the side-by-side figure. With --kind ws, our WebSocket transport is stormed
(the generator copy that speaks PROTOCOL 3.3, bench/vs_socketio.py).

    .venv/bin/python bench/reconnect_storm.py --variants after=.,before=/tmp/before --repeat 3
    .venv/bin/python bench/reconnect_storm.py --kind poll --n 1000 --variants after=.,before=/tmp/b
    .venv/bin/python bench/reconnect_storm.py --n 10000 --engines memory,redis,socketio,floor
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    PYTHON,
    ROOT,
    Redis,
    Server,
    cpu_seconds,
    free_port,
    machine,
    median,
    pinned,
    port_open,
    print_table,
    stop_group,
    token,
    wait_until,
    write_json,
)
from vs_socketio import SocketIO, prepare_anchor

ROOM = "matches"
SIO_ROOM = "leaderboard:global"  # the reference server's one room


class FloorServer:
    """bench/storm_floor.py: accepting and a canned stream:open, nothing else (--engines
    floor): its storm rate is the generator's ceiling, not a server's."""

    def __init__(self, cpus: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            pinned([PYTHON, str(Path(__file__).with_name("storm_floor.py")), str(self.port)], cpus),
            start_new_session=True,
        )
        wait_until(lambda: port_open(self.port), 30, "the floor server")
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_group(self.process)


def generator_command(engine: str, url: str, admin: str, args: argparse.Namespace) -> list[str]:
    """The anchor's generator for --kind on `engine`: the reference server is stormed over
    its own WebSocket transport (`sio`) for a stream kind and its polling for `poll`; our
    WebSocket kind is the copy of loadgen.js that speaks PROTOCOL 3.3 (bench/vs_socketio.py)."""
    streams = args.kind != "poll"
    count = 1 if streams else int(args.rate * args.seconds)
    if engine == "socketio":
        script, room, target_url = "loadgen.js", SIO_ROOM, url
        kind = "sio" if streams else "siopoll"
    elif args.kind == "ws":
        script, kind, room = "loadgen_ws.js", "ws", SIO_ROOM  # (it subscribes to that room)
        target_url = f"{url.replace('http', 'ws')}/api/ws?access_token={admin}"
    else:
        script, kind, room = "loadgen.js", args.kind, ROOM
        path = "events" if args.kind == "sse" else "poll"
        target_url = f"{url}/api/{path}?rooms={ROOM}&access_token={admin}"
    return [
        "node", *args.node_flags.split(), script,
        "--kind", kind, "--url", target_url, "--n", str(args.n),
        "--publish", f"{url}/api/publish", "--token", admin,
        "--count", str(count), "--rate", str(0 if streams else args.rate),
        "--expect", str(count), "--tsfield", "sent", "--room", room, "--timeout", "90000",
    ]  # fmt: skip


def run_once(tree: str, engine: str, args: argparse.Namespace) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="bench-storm-")
    env = {"PYTHONPATH": str(Path(tree).resolve())} if Path(tree).resolve() != ROOT else {}
    redis = Redis(cpus=args.gen_cpu) if engine == "redis" else None
    if redis is not None:
        env["MAX_CONNECTIONS_PER_USER"] = "1000000"
    server: Server | FloorServer | SocketIO
    if engine == "floor":
        server = FloorServer(args.server_cpu)
    elif engine == "socketio":
        server = SocketIO(args.anchor, args.server_cpu)
    else:
        server = Server(
            workdir, cpus=args.server_cpu, env=env, redis_url=redis.url if redis else None
        )
    admin = token("bench", "admin")
    try:
        command = pinned(generator_command(engine, server.url, admin, args), args.gen_cpu)
        cpu_before = cpu_seconds(server.pid)
        started = time.monotonic()
        done = subprocess.run(command, cwd=args.anchor, capture_output=True, text=True)
        wall = time.monotonic() - started
        cpu = cpu_seconds(server.pid) - cpu_before
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            return {"error": done.stderr[-300:]}
        report: dict[str, Any] = json.loads(lines[-1])
        report.update(wall_s=round(wall, 2), server_cpu_s=round(cpu, 2))
        if args.kind != "poll":
            report["streams_per_s"] = (
                round(args.n / report["connect_s"]) if report["connect_s"] else None
            )
            report["cpu_ms_per_stream"] = round(cpu * 1000 / args.n, 3)
        else:
            delivered = max(1, int(report["delivered"]))
            report["cpu_ms_per_answer"] = round(cpu * 1000 / delivered, 3)
        return report
    finally:
        server.stop()
        if redis is not None:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("sse", "ws", "poll"), default="sse")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--engines", default="memory,redis")
    parser.add_argument("--variants", default="after=.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--gen-cpu", default="1")
    parser.add_argument("--anchor", type=Path, default=Path(tempfile.gettempdir()) / "anchor")
    parser.add_argument(
        "--node-flags",
        default="",
        help="V8 flags for the generator (e.g. --max-semi-space-size=64: its young-generation "
        "collections are most of its CPU in a storm), the same for every system",
    )
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    prepare_anchor(args.anchor)
    variants = dict(item.split("=", 1) for item in args.variants.split(","))
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for round_ in range(args.repeat):
        for engine in args.engines.split(","):
            # Not this service: one run a round is enough (the variants do not apply).
            own = engine in ("memory", "redis")
            for name, tree in variants.items() if own else [("-", ".")]:
                report = run_once(tree, engine, args)
                results.setdefault((engine, name), []).append(report)
                load = os.getloadavg()[0]
                head = f"[{round_ + 1}/{args.repeat}] {engine:6} {name:8} load {load:.1f}"
                print(head, json.dumps(report), flush=True)
    metric = "cpu_ms_per_answer" if args.kind == "poll" else "cpu_ms_per_stream"
    rows = []
    sse = args.kind != "poll"
    for (engine, name), reports in results.items():
        ok = [r for r in reports if "error" not in r]
        rows.append([
            engine, name, median([r["connect_s"] for r in ok]),
            median([r.get("streams_per_s") or 0 if sse else r["p99_ms"] for r in ok]),
            median([r[metric] for r in ok]), f"{len(ok)}/{len(reports)}",
        ])  # fmt: skip
    second = "p99 ms" if args.kind == "poll" else "streams/s"
    print(f"medians of {args.repeat}; {args.kind}, n={args.n}")
    print_table(["engine", "variant", "connect s", second, metric, "ok"], rows)
    if args.json:
        summary = {f"{e}/{n}": r for (e, n), r in results.items()}
        write_json(
            args.json,
            {
                "machine": machine(),
                "args": vars(args) | {"anchor": str(args.anchor)},
                "runs": summary,
            },
        )


if __name__ == "__main__":
    main()
