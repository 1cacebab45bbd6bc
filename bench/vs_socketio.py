"""Side by side with Socket.IO (issue 9): long-poll, SSE, WebSocket and bursts, one run.

Starts each system fresh per measurement, pinned to --server-cpu (ours: `python -m quart_app
serve`, any number of source trees with --variants; Socket.IO: the reference server of
/work/shared/anchor), and the same Node load generator on --gen-cpu, both fed through the same
`POST /api/publish`. Meanwhile a prober (this process) POSTs to /api/publish of another room
5 times a second and times each answer: the fairness figure (a crowd must not starve writes).
Each measurement is repeated --repeat times, systems interleaved; medians and ratios printed.

    .venv/bin/python bench/vs_socketio.py                          # everything, ~15 minutes
    .venv/bin/python bench/vs_socketio.py --only poll --pollers 1000 --repeat 1
    .venv/bin/python bench/vs_socketio.py --variants after=.,before=/tmp/before

Node 18+ and `npm install` in a copy of the anchor folder are needed (--anchor; set up on
first use): this is a command, not a test, because CI has no Node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    Client,
    Server,
    children_cpu_seconds,
    cpu_seconds,
    free_port,
    machine,
    median,
    pinned,
    print_table,
    target,
    token,
    wait_until,
    write_json,
)

ANCHOR = Path("/work/shared/anchor")
ROOM = "leaderboard:global"
PROBE_ROOM = "match:probe"

# Our WebSocket protocol (PROTOCOL 3.3) for the anchor's generator, which knows only
# Socket.IO, SSE and long-poll: spliced into a copy of loadgen.js at set-up.
WS_KIND = r"""
function ws(i, url) {
  const sock = new WebSocket(url, { perMessageDeflate: false });
  const hello = { type: 'subscribe', rooms: ['leaderboard:global'], top: 1 };
  sock.on('open', () => sock.send(JSON.stringify(hello)));
  sock.on('message', (buf) => {
    const m = buf.toString();
    if (/^\{"type": ?"subscribed"/.test(m)) { ready++; return; }
    const p = m.indexOf(tsKey);
    if (p < 0) return;
    let e = m.indexOf(',', p); const b = m.indexOf('}', p);
    if (e < 0 || (b >= 0 && b < e)) e = b;
    onEvent(i, +m.slice(p + tsKey.length, e));
  });
  sock.on('error', (e) => { console.error('ws error', i, e.message); });
}
"""


def prepare_anchor(where: Path) -> Path:
    if not (where / "node_modules").is_dir():
        shutil.copytree(ANCHOR, where, dirs_exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=where, check=True)
    source = (ANCHOR / "loadgen.js").read_text()
    patched = source.replace("async function publishAll()", WS_KIND + "async function publishAll()")
    patched = patched.replace("({ sio, sse, siopoll, poll })", "({ sio, sse, siopoll, poll, ws })")
    (where / "loadgen_ws.js").write_text(patched)
    return where


class SocketIO:
    def __init__(self, anchor: Path, cpus: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            pinned(["node", "sio_server.js"], cpus),
            cwd=anchor,
            env={**os.environ, "PORT": str(self.port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self._up, 30, "the Socket.IO server")
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid  # (taskset execs node: the server itself)

    def _up(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        os.killpg(self.process.pid, 15)
        self.process.wait(10)


def generator_args(system: str, kind: str, url: str, tok: str) -> list[str]:
    """The generator's client kind and URL for `kind` (poll, stream, ws) on `system`."""
    if system == "socket.io":
        return ["--kind", "siopoll" if kind == "poll" else "sio", "--url", url]
    if kind == "poll":
        return ["--kind", "poll", "--url", f"{url}/api/poll?rooms={ROOM}&top=1&access_token={tok}"]
    if kind == "sse":
        return ["--kind", "sse", "--url", f"{url}/api/events?rooms={ROOM}&top=1&access_token={tok}"]
    return ["--kind", "ws", "--url", f"{url.replace('http', 'ws')}/api/ws?access_token={tok}"]


async def probe(url: str, tok: str, stop: asyncio.Event) -> list[float]:
    """POST /api/publish (to a room nobody watches) 5 times a second: answer times in ms."""
    client = Client(target(url), tok)
    await client.open()
    times: list[float] = []
    try:
        while not stop.is_set():
            started = time.perf_counter()
            status, _ = await client.post(
                "/api/publish", {"room": PROBE_ROOM, "event": "announcement", "data": {"p": 1}}
            )
            if status < 300:
                times.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.2)
    finally:
        client.close()
    return times


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    system: str, tree: str | None, scenario: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="bench-vs-sio-")
    admin = token("bench", "admin")
    server: Server | SocketIO
    if tree is None:
        server = SocketIO(args.anchor, args.server_cpu)
    else:
        env = {"PYTHONPATH": str(Path(tree).resolve())} if tree != str(ROOT) else {}
        env.update({"MAX_CONNECTIONS": "0", "RATE_LIMIT_PUBLISH": "0"})
        server = Server(workdir, cpus=args.server_cpu, env=env)
    try:
        count, rate = scenario["count"], scenario.get("rate", 0)
        command = pinned(
            [
                "node",
                *args.node_flags.split(),
                "loadgen_ws.js",
                *generator_args(system, scenario["kind"], server.url, admin),
                "--n",
                str(scenario["n"]),
                "--publish",
                f"{server.url}/api/publish",
                "--token",
                admin,
                "--count",
                str(count),
                "--rate",
                str(rate),
                "--expect",
                str(count),
                "--tsfield",
                "sent",
                "--room",
                ROOM,
                "--timeout",
                "60000",
            ],
            args.gen_cpu,
        )
        stop = asyncio.Event()
        prober = asyncio.create_task(probe(server.url, admin, stop))
        cpu_before = cpu_seconds(server.pid)
        children_before = children_cpu_seconds()
        generator = await asyncio.create_subprocess_exec(
            *command,
            cwd=args.anchor,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await generator.communicate()
        cpu = cpu_seconds(server.pid) - cpu_before  # connecting, publishing, delivering
        # The generator's own CPU: near its run's length, it is saturated, and its own delays
        # are then part of what it measures.
        generator_cpu = children_cpu_seconds() - children_before
        stop.set()
        posts = await prober
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if not lines:
            return {"error": err.decode()[-500:]}
        report: dict[str, Any] = json.loads(lines[-1])
        report["server_cpu_s"] = round(cpu, 2)
        report["generator_cpu_s"] = round(generator_cpu, 2)
        report["post_p50_ms"] = percentile(posts, 0.5)
        report["post_p99_ms"] = percentile(posts, 0.99)
        # Keeping up: every event to everyone, at (nearly) the publish rate, not only in the end.
        wanted = scenario["n"] * rate if rate else 0
        report["kept_up"] = report["delivered"] >= report["expected"] > 0 and (
            report["deliveries_per_s"] >= 0.9 * wanted
        )
        return report
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def scenarios(args: argparse.Namespace) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if "poll" in args.only:
        for n in args.pollers:
            found.append(
                {
                    "name": f"poll {n} x {args.rate}/s",
                    "kind": "poll",
                    "n": n,
                    "rate": args.rate,
                    "count": int(args.rate * args.seconds),
                    "metric": "p99_ms",
                }
            )
    for kind in ("sse", "ws"):
        if kind in args.only:
            found.append(
                {
                    "name": f"{kind} 1000 x {args.rate}/s",
                    "kind": kind,
                    "n": 1000,
                    "rate": args.rate,
                    "count": int(args.rate * args.seconds),
                    "metric": "p99_ms",
                }
            )
    if "burst" in args.only:
        found.append(
            {
                "name": f"burst {args.burst} to 1000 sse",
                "kind": "sse",
                "n": 1000,
                "rate": 0,
                "count": args.burst,
                "metric": "deliveries_per_s",
            }
        )
    return found


async def main(args: argparse.Namespace) -> dict[str, Any]:
    variants = dict(v.split("=", 1) for v in args.variants.split(","))
    systems: list[tuple[str, str | None]] = [("socket.io", None)]
    systems += [(name, str(Path(tree).resolve())) for name, tree in variants.items()]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for repeat in range(args.repeat):
        for scenario in scenarios(args):
            for system, tree in systems:
                kind = scenario["kind"]
                report = await measure(system, tree, scenario, args)
                results.setdefault(scenario["name"], {}).setdefault(system, []).append(report)
                print(
                    f"[{repeat + 1}/{args.repeat}] {scenario['name']:<24} {system:<10} "
                    f"{kind:<5} {json.dumps(report)[:230]}",
                    flush=True,
                )
    rows: list[list[Any]] = []
    summary: dict[str, Any] = {}
    for scenario in scenarios(args):
        by_system = results[scenario["name"]]
        figures: dict[str, dict[str, Any]] = {}
        for system, reports in by_system.items():
            ok = [r for r in reports if "error" not in r]
            figures[system] = {
                key: median([r.get(key) for r in ok])
                for key in (
                    "p50_ms",
                    "p99_ms",
                    "deliveries_per_s",
                    "post_p99_ms",
                    "server_cpu_s",
                    "generator_cpu_s",
                )
            }
            figures[system]["kept_up"] = all(r.get("kept_up") for r in ok) and len(ok) == len(
                reports
            )
        base = figures["socket.io"].get(scenario["metric"])
        for system, fig in figures.items():
            mine = fig.get(scenario["metric"])
            ratio = (mine / base) if mine is not None and base else None
            fig["ratio_vs_socketio"] = ratio
            rows.append(
                [
                    scenario["name"],
                    system,
                    fig["p50_ms"],
                    fig["p99_ms"],
                    fig["deliveries_per_s"],
                    fig["post_p99_ms"],
                    fig["server_cpu_s"],
                    fig["generator_cpu_s"],
                    fig["kept_up"],
                    "-" if ratio is None else f"{ratio:.2f}x",
                ]
            )
        summary[scenario["name"]] = {"metric": scenario["metric"], "systems": figures}
    print()
    print(
        f"medians of {args.repeat}; ratio = ours / Socket.IO of the scenario's metric "
        "(p99: lower is better; burst deliveries/s: higher is better)"
    )
    print_table(
        [
            "scenario",
            "system",
            "p50 ms",
            "p99 ms",
            "deliveries/s",
            "POST p99 ms",
            "server CPU s",
            "generator CPU s",
            "kept up",
            "ratio",
        ],
        rows,
    )
    return {
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "summary": summary,
        "runs": results,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="poll,sse,ws,burst", type=lambda s: s.split(","))
    parser.add_argument(
        "--pollers", default="100,300,1000", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=10, help="publishing time per run")
    parser.add_argument("--burst", type=int, default=1000, help="events in the burst")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default="ours=.", help="name=source tree,...")
    parser.add_argument("--anchor", type=Path, default=Path(tempfile.gettempdir()) / "anchor")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--gen-cpu", default="1")
    parser.add_argument(
        "--node-flags",
        default="",
        help="V8 flags for the generator, the same for every system (see reconnect_storm.py)",
    )
    parser.add_argument("--json", default=str(ROOT / "docs/benchmarks/vs-socketio.json"))
    args = parser.parse_args()
    args.anchor = prepare_anchor(args.anchor)
    return args


if __name__ == "__main__":
    arguments = parse_args()
    write_json(arguments.json, asyncio.run(main(arguments)))
