"""The hub's own cost per subscriber, without the kernel: fan-out of one event to N
connections and the flush that writes it, with a transport whose write does nothing.

Set beside bench/socket_floor.py (the kernel's cost of the same N sends), this says how much
of a fan-out is Python and how much is the socket. Prints a table and writes JSON.

    .venv/bin/python bench/hub_overhead.py [--subscribers 1000 10000] [--cpu 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from quart_app.engine.base import Draft, Publication
from quart_app.engine.hub import Hub
from quart_app.engine.memory import MemoryEngine
from quart_app.web.raw_socket import ChunkedSink


class NullTransport:
    """Accepts every write at once: what remains is the hub's and the sink's Python."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


async def measure(count: int, repeats: int) -> tuple[float, float]:
    engine = MemoryEngine()
    await engine.start()
    hub = Hub(engine, queue_limit=1000)
    await hub.start()
    for _ in range(count):
        hub.open(None, ["matches"], None).attach(ChunkedSink(NullTransport()))  # type: ignore[arg-type]
    fan_outs, flushes = [], []
    for n in range(repeats):
        started = time.perf_counter()
        await engine.publish(Publication(events=(Draft(("matches",), "announcement", {"n": n}),)))
        fan_outs.append(time.perf_counter() - started)
        while hub._to_flush:  # the flush runs on the next loop iteration
            await asyncio.sleep(0)
        flushes.append(hub.last_flush_seconds)
    await hub.stop()
    await engine.stop()
    return statistics.median(fan_outs), statistics.median(flushes)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--json", default="bench/out/hub_overhead.json")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    rows = []
    print(f"{'subscribers':>11}  {'fan-out ms':>10}  {'flush ms':>8}  {'us per subscriber':>17}")
    for count in args.subscribers:
        fan_out, flush = await measure(count, args.repeats)
        per = (fan_out + flush) / count * 1e6
        rows.append(
            {
                "subscribers": count,
                "fan_out_ms": fan_out * 1000,
                "flush_ms": flush * 1000,
                "per_subscriber_us": per,
            }
        )
        print(f"{count:>11,}  {fan_out * 1000:>10.1f}  {flush * 1000:>8.1f}  {per:>17.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
