"""`rankpulse serve --workers N`: N instances on one port (SO_REUSEPORT), real processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable

from .clients import HttpApi, SSEClient
from .services import LiveServer, free_port

SECRET = "workers-test-secret-0123456789"


def _instance(connection_id: str) -> str:
    return connection_id.rsplit("-", 1)[0]


async def test_two_workers_share_the_port_and_both_deliver_every_event(
    live_servers: Callable[..., LiveServer], redis_url: str
) -> None:
    server = live_servers(
        env={"REDIS_URL": redis_url, "JWT_SECRET": SECRET}, args=("--workers", "2")
    )
    token = server.token("viewer")
    async with contextlib.AsyncExitStack() as stack:
        # The kernel spreads connections over the two accept queues: open streams until one
        # is held by each worker (each worker is its own instance, with its own id).
        by_worker: dict[str, SSEClient] = {}
        for _ in range(40):
            sse = await stack.enter_async_context(SSEClient(server.url, "matches", token))
            await sse.wait_event("stream:open")
            by_worker.setdefault(_instance(sse.connection_id), sse)
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2, "every stream landed on the same worker"
        admin = HttpApi(server.url, server.token("ops", "admin"))
        for n in range(20):
            await admin.announce("matches", {"n": n})
        for sse in by_worker.values():
            await sse.wait_for(
                lambda evs: (
                    [e["data"]["n"] for e in evs if e["event"] == "announcement"] == list(range(20))
                ),
                10,
                "all 20 announcements, in order",
            )


def test_workers_refuse_the_memory_engine(tmp_path: object) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PORT")}
    done = subprocess.run(
        [sys.executable, "-m", "quart_app", "serve", "--workers", "2", "--port", str(free_port())],
        env=env,
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "--workers needs REDIS_URL" in done.stderr
