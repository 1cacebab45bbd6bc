"""The keep-alive idle timeout of a connection as a timer, not a task (hypercorn_fast.py,
lane_front.py).

Hypercorn 0.18 arms its idle timeout by creating a task that runs
`wait_for(context.terminated.wait(), keep_alive_timeout)` each time a connection goes idle,
and cancels (and awaits) it each time a request arrives: two task creations, a cancellation
and a lock per request. Under 1,000 long-pollers that is ~80k cancellations a run, for a
timer that almost never fires. Here arming and disarming are two plain assignments.
Shutdown keeps Hypercorn's behaviour: when the worker's `context.terminated` is set, every
idle connection closes at once (one watcher task per worker, not one per connection), and a
connection that goes idle after it closes at once.

A connection (`server`) gives `loop`, `config` (keep_alive_timeout) and
`_initiate_server_close()`, as Hypercorn's TCPServer does.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from hypercorn.asyncio.worker_context import WorkerContext


class _IdleConnections:
    """The armed idle timers of one worker, closed together when it terminates."""

    def __init__(self, context: WorkerContext) -> None:
        self.armed: set[IdleTimer] = set()
        self.terminated = False
        self._watcher = asyncio.get_running_loop().create_task(self._watch(context))

    async def _watch(self, context: WorkerContext) -> None:
        await context.terminated.wait()
        self.terminated = True
        for timer in list(self.armed):
            timer.expire()


_WORKERS: weakref.WeakKeyDictionary[WorkerContext, _IdleConnections] = weakref.WeakKeyDictionary()


def idle_connections(context: WorkerContext) -> _IdleConnections:
    idle = _WORKERS.get(context)
    if idle is None:
        idle = _WORKERS[context] = _IdleConnections(context)
    return idle


class IdleTimer:
    """Stands in for Hypercorn's AsyncioSingleTask as `TCPServer.idle_task`.

    Lazy: arming stamps the time the connection went idle, and one timer per connection checks
    the stamp when it fires (re-scheduling itself for the rest), so a keep-alive poller's
    arm/disarm per request is two plain assignments, not a timer scheduled and cancelled."""

    def __init__(self, server: Any, idle: _IdleConnections) -> None:
        self._server = server
        self._idle = idle
        self._timeout: float = server.config.keep_alive_timeout
        self._handle: asyncio.TimerHandle | None = None
        self._idle_since: float | None = None
        self._closing: asyncio.Task[None] | None = None
        # Bumped by every arm/disarm: a close scheduled by an expiry is dropped when a
        # request arrived between the expiry and the close (Hypercorn would close it).
        self._generation = 0

    def arm(self) -> None:
        self._generation += 1
        self._idle.armed.add(self)
        if self._idle.terminated:
            self.expire()
            return
        loop = self._server.loop
        self._idle_since = loop.time()
        if self._handle is None:
            self._handle = loop.call_later(self._timeout, self._check)

    def disarm(self) -> None:
        self._generation += 1
        self._idle_since = None
        self._idle.armed.discard(self)

    def _check(self) -> None:
        self._handle = None
        since = self._idle_since
        if since is None:
            return  # busy: the next arm schedules a check again
        left = since + self._timeout - self._server.loop.time()
        if left > 0:
            self._handle = self._server.loop.call_later(left, self._check)
        else:
            self.expire()

    def expire(self) -> None:
        self._cancel()
        self._idle_since = None
        self._idle.armed.discard(self)
        if self._closing is None:
            self._closing = self._server.loop.create_task(self._close(self._generation))

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    async def _close(self, generation: int) -> None:
        try:
            if generation == self._generation:
                await self._server._initiate_server_close()
        finally:
            self._closing = None

    # AsyncioSingleTask's interface, as TCPServer.run and _close call it.
    async def restart(self, task_group: Any, action: Any) -> None:
        self.arm()

    async def stop(self) -> None:
        self.release()

    def release(self) -> None:
        """The connection closed (or is Hypercorn's now): no check is needed any more."""
        self.disarm()
        self._cancel()
