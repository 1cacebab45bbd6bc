"""When `rankpulse serve` stops: SIGTERM drains (PROTOCOL 3.7), SIGINT stops at once.

Hypercorn's own signal handling stops accepting and cuts every open stream at once: every
client of the instance would reconnect elsewhere in the same instant (a reconnect storm).
This shutdown trigger returns to Hypercorn only once the instance drained: /readyz and new
streams answer 503 from the signal on, open streams end spread over DRAIN_SECONDS (runtime
and hub), and only then does Hypercorn stop. Nothing here needs Redis or the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

from .runtime import Runtime

log = logging.getLogger(__name__)


def shutdown_trigger(runtime: Runtime) -> Callable[[], Awaitable[None]]:
    """For hypercorn.asyncio.serve(shutdown_trigger=...): returns when the server should stop."""

    async def until_drained() -> None:
        loop = asyncio.get_running_loop()
        terminate, interrupt = asyncio.Event(), asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, terminate.set)
        loop.add_signal_handler(signal.SIGINT, interrupt.set)
        await _first(terminate.wait(), interrupt.wait())
        if interrupt.is_set():
            return
        # A second SIGTERM (a process group signalled twice, a supervisor forwarding it)
        # does not cut the drain short; SIGINT does.
        await _first(runtime.drain(), interrupt.wait())

    return until_drained


async def _first(*awaitables: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
