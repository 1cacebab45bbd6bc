"""`rankpulse serve --workers N`: N full instances on one port (SO_REUSEPORT).

Each worker is its own process running `rankpulse serve` with a socket bound with
SO_REUSEPORT: the kernel spreads new connections over the workers' accept queues, and
each worker is an ordinary instance of the cluster (its own hub, its own Redis
connections), so nothing is shared but the port. Only the Redis engine can do this: the
memory engine's board and log live in one process.

The parent only supervises: it forwards SIGTERM / SIGINT (each worker drains on its own,
PROTOCOL 3.7), restarts a worker that died while serving, and exits when all have exited.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

log = logging.getLogger(__name__)

WORKER_ENV = "RANKPULSE_WORKER"
# A worker that dies within this long of its start is not restarted (a bad configuration
# would otherwise restart forever); the supervisor stops instead.
RESTART_MIN_UPTIME = 5.0
_PR_SET_PDEATHSIG = 1


def reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    # A worker must not outlive a supervisor killed with -9 (Linux only; best effort).
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def supervise(workers: int, argv: list[str]) -> int:
    """Run `workers` copies of `rankpulse serve <argv>` until they all exited."""
    env = {**os.environ, WORKER_ENV: str(workers)}
    command = [sys.executable, "-m", "quart_app", "serve", *argv]
    stopping = False

    def start() -> tuple[subprocess.Popen[bytes], float]:
        process = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509
        return process, time.monotonic()

    running = [start() for _ in range(workers)]

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process, _ in running:
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    while running:
        time.sleep(0.2)
        for index, (process, started) in enumerate(list(running)):
            code = process.poll()
            if code is None:
                continue
            running.remove((process, started))
            status = status or code
            if stopping:
                continue
            if time.monotonic() - started < RESTART_MIN_UPTIME:
                print(f"rankpulse serve: worker exited at start ({code}); stopping", flush=True)
                forward(signal.SIGTERM, None)
                continue
            print(f"rankpulse serve: worker {index} exited ({code}); restarting", flush=True)
            running.append(start())
    return status
