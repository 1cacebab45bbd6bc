"""Where a long-poll delivery's time goes (issue 9): the server's part and the generator's.

Runs the anchor's generator (`loadgen_ws.js --kind poll`, --n pollers, --rate events/s, the
publisher in the same Node process) against `rankpulse serve` with stamps taken inside the
server, on the same wall clock as the generator's `sent` stamp of each event:

- publish read: from the generator stamping an event to the server having read its POST body;
- waited for the poll: an event published while its poller had no poll at the server, until
  that poller's next poll arrived (the poller was reading its last answer, or its request
  was on its way);
- answered after: from the later of the event's stamp and its poll's arrival, to the answer
  being written;
- poll turnaround: on one connection, from an answer's write to the next poll's bytes read;
- read to answer: from a poll's bytes read to the lane starting its answer.

And the generator's own measure (p50/p99 from stamp to receipt) and its CPU seconds: a
generator near 1 CPU second per second of run is saturated, and its queue then shows up in
"publish read", "waited for the poll" and "poll turnaround" alike.

    .venv/bin/python bench/poll_lag.py --n 300 --rate 20 --seconds 15 [--tree /tmp/before]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    Server,
    children_cpu_seconds,
    machine,
    pinned,
    print_table,
    token,
    wait_until,
    write_json,
)

ROOM = "matches"
_SENT = re.compile(rb'"sent":([0-9.]+)')
STAGES = (
    "publish read",
    "waited for the poll",
    "answered after",
    "poll turnaround",
    "read to answer",
)


def _instrumented_serve() -> None:
    """`rankpulse serve` with the stamps of this module's docstring; SIGUSR1 starts them,
    SIGUSR2 writes them to $POLL_LAG_OUT. Patches three internals, for this bench only."""
    # --tree: that code's quart_app, not the one _common imported from this tree.
    sys.path.insert(0, os.environ.get("POLL_LAG_TREE", str(ROOT)))
    for name in [name for name in sys.modules if name.split(".")[0] == "quart_app"]:
        del sys.modules[name]
    from quart_app.cli import main
    from quart_app.web import api, fast_lane, poll

    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    on = [False]
    read_at: dict[int, float] = {}
    written_at: dict[int, float] = {}

    def now() -> float:
        return time.time() * 1000

    answer = poll.LongPoll.answer

    async def timed_answer(self: Any, method: str, query: bytes, headers: Any) -> Any:
        arrived = now()
        result = await answer(self, method, query, headers)
        if on[0] and result.status == 200:
            done = now()
            for stamp in _SENT.finditer(result.body):
                sent = float(stamp.group(1))
                samples["waited for the poll"].append(max(0.0, arrived - sent))
                samples["answered after"].append(done - max(sent, arrived))
        return result

    feed = fast_lane.FastLane.feed

    async def timed_feed(self: Any, data: bytes) -> None:
        read_at[id(self)] = now()
        await feed(self, data)

    answer_poll = fast_lane.FastLane._answer_poll

    async def timed_answer_poll(self: Any, protocol: Any, long_poll: Any, request: Any) -> None:
        key = id(self)
        if on[0] and key in read_at:
            samples["read to answer"].append(now() - read_at[key])
            if key in written_at:
                samples["poll turnaround"].append(read_at[key] - written_at[key])
        await answer_poll(self, protocol, long_poll, request)
        written_at[key] = now()

    read_body = api.read_body

    async def timed_read_body(model: Any) -> Any:
        body = await read_body(model)
        data = getattr(body, "data", None)
        if on[0] and isinstance(data, dict) and "sent" in data:
            samples["publish read"].append(now() - float(data["sent"]))
        return body

    poll.LongPoll.answer = timed_answer  # type: ignore[method-assign]
    fast_lane.FastLane.feed = timed_feed  # type: ignore[method-assign]
    fast_lane.FastLane._answer_poll = timed_answer_poll  # type: ignore[method-assign]
    api.read_body = timed_read_body

    def start(*_: object) -> None:
        on[0] = True

    def stop(*_: object) -> None:
        on[0] = False
        served = str(Path(sys.modules["quart_app"].__file__ or "").parent.parent)
        Path(os.environ["POLL_LAG_OUT"]).write_text(json.dumps({"tree": served, **samples}))

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["rankpulse", *sys.argv[2:]]
    main()


def quantiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)

    def at(q: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="bench-poll-lag-")
    out = os.path.join(workdir, "stages.json")
    server = Server(
        workdir,
        cpus=args.server_cpu,
        env={"POLL_LAG_OUT": out, "POLL_LAG_TREE": str(Path(args.tree).resolve())},
        entry=(str(Path(__file__).resolve()), "--instrumented"),
    )
    admin = token("bench", "admin")
    count = int(args.rate * args.seconds)
    command = pinned(
        [
            "node", "loadgen_ws.js", "--kind", "poll",
            "--url", f"{server.url}/api/poll?rooms={ROOM}&top=1&access_token={admin}",
            "--n", str(args.n), "--publish", f"{server.url}/api/publish", "--token", admin,
            "--count", str(count), "--rate", str(args.rate), "--expect", str(count),
            "--tsfield", "sent", "--room", ROOM, "--timeout", "60000",
        ],
        args.gen_cpu,
    )  # fmt: skip
    try:
        os.kill(server.pid, signal.SIGUSR1)
        cpu_before = children_cpu_seconds()
        started = time.monotonic()
        finished = subprocess.run(command, cwd=args.anchor, capture_output=True, text=True)
        wall = time.monotonic() - started
        generator_cpu = children_cpu_seconds() - cpu_before
        os.kill(server.pid, signal.SIGUSR2)
        wait_until(lambda: os.path.exists(out), 10, "the server's stamps")
        time.sleep(0.2)  # (the file is written in one call; let it land whole)
        samples = json.loads(Path(out).read_text())
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    lines = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    generator = json.loads(lines[-1]) if lines else {"error": finished.stderr[-500:]}
    # Polls answered per event delivered: above 1, pollers paid round trips for nothing new.
    polls = len(samples["read to answer"])
    delivered = generator.get("delivered") or 0
    return {
        "generator": generator,
        "generator_cpu_s": round(generator_cpu, 2),
        "run_s": round(wall, 2),
        "tree_served": samples["tree"],
        "polls_answered": polls,
        "polls_per_delivery": round(polls / delivered, 3) if delivered else None,
        "stages": {stage: quantiles(samples[stage]) for stage in STAGES},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--tree", default=".", help="the source tree to serve (default: this)")
    parser.add_argument("--anchor", type=Path, default=Path(tempfile.gettempdir()) / "anchor")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--gen-cpu", default="1")
    parser.add_argument("--json", default="bench/out/poll_lag.json")
    args = parser.parse_args()
    report = run(args)
    generator = report["generator"]
    print(f"served: {report['tree_served']}")
    print(
        f"{args.n} pollers x {args.rate}/s: generator p50 {generator.get('p50_ms')} ms, "
        f"p99 {generator.get('p99_ms')} ms; generator CPU {report['generator_cpu_s']} s "
        f"in a {report['run_s']} s run; {report['polls_answered']} polls answered, "
        f"{report['polls_per_delivery']} per event delivered"
    )
    print_table(
        ["stage (server stamps, ms)", "samples", "p50", "p90", "p99", "max"],
        [
            [stage, figures["n"], figures["p50"], figures["p90"], figures["p99"], figures["max"]]
            for stage, figures in report["stages"].items()
        ],
    )
    write_json(args.json, {"machine": machine(), "args": vars(args), **report})


if __name__ == "__main__":
    if sys.argv[1:2] == ["--instrumented"]:
        _instrumented_serve()
    else:
        main()
