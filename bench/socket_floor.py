"""The kernel's floor for fan-out on this machine: how long one process takes to send one
small frame to each of N loopback TCP sockets, with nothing else in the loop.

On loopback the sender's CPU also does the receiver's TCP work, so this is the least a server
pinned to one core can spend delivering one event to N subscribers, whatever its language.
Prints a table and writes JSON.

    .venv/bin/python bench/socket_floor.py [--subscribers 1000 10000] [--cpu 0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import time
from pathlib import Path

FRAME = b"x" * 300  # about one leaderboard:update frame


def measure(count: int, repeats: int) -> list[float]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    clients, servers = [], []
    try:
        for _ in range(count):
            clients.append(socket.create_connection(listener.getsockname()))
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setblocking(False)
            servers.append(conn)
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            for conn in servers:
                conn.send(FRAME)
            timings.append(time.perf_counter() - started)
            for client in clients:
                client.recv(4096)
        return timings
    finally:
        for sock in (*clients, *servers, listener):
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1000, 9000])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--json", default="bench/out/socket_floor.json")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {args.cpu})
    rows = []
    print(f"{'subscribers':>11}  {'one event to all, median ms':>27}  {'per send, us':>12}")
    for count in args.subscribers:
        median = statistics.median(measure(count, args.repeats))
        rows.append(
            {"subscribers": count, "median_ms": median * 1000, "per_send_us": median / count * 1e6}
        )
        print(f"{count:>11,}  {median * 1000:>27.1f}  {median / count * 1e6:>12.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"frame_bytes": len(FRAME), "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
