"""Hypercorn's asyncio TCP server with a timer, not a task, for the keep-alive idle timeout.

Hypercorn 0.18 arms its idle timeout by creating a task that runs
`wait_for(context.terminated.wait(), keep_alive_timeout)` each time a connection goes idle,
and cancels (and awaits) it each time a request arrives: two task creations, a cancellation
and a lock per request. Under 1,000 long-pollers that is ~80k cancellations a run, for a
timer that almost never fires. Here the timer is a `loop.call_later` handle: arming and
disarming are two plain calls. Shutdown keeps Hypercorn's behaviour: when the worker's
`context.terminated` is set, every idle connection closes at once (one watcher task per
worker, not one per connection), and a connection that goes idle after it closes at once.

It also hosts the fast lane (fast_lane.py): plain `GET`s of the long-poll and SSE paths
served past Hypercorn's request parsing and task per request, on by default (FAST_LANE).

`install()` is the one place that hands this class to `hypercorn.asyncio.run`; `rankpulse
serve` calls it. The class overrides internals of one Hypercorn minor version, hence the
version check at import: an upgrade fails loudly here instead of misbehaving.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import weakref
from typing import Any

import hypercorn.asyncio.run as hypercorn_run
from hypercorn.asyncio.tcp_server import MAX_RECV, TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.events import Closed, Event, RawData, Updated

from ..config import ConfigError
from .fast_lane import FastLane

# Written against hypercorn/asyncio/tcp_server.py of 0.18.x (run, protocol_send, _read_data,
# _close, _initiate_server_close): re-read that file before widening this.
SUPPORTED_HYPERCORN = "0.18."
_version = importlib.metadata.version("hypercorn")
if not _version.startswith(SUPPORTED_HYPERCORN):
    raise ImportError(
        f"quart_app.web.hypercorn_fast was written for hypercorn {SUPPORTED_HYPERCORN}x, "
        f"found {_version}: re-check it against hypercorn/asyncio/tcp_server.py"
    )

KEEP_ALIVE_ENV = "KEEP_ALIVE_SECONDS"
DEFAULT_KEEP_ALIVE_SECONDS = 5.0  # Hypercorn's own default


def keep_alive_seconds(environ: dict[str, str] | None = None) -> float:
    """Seconds an idle keep-alive connection stays open (KEEP_ALIVE_SECONDS)."""
    raw = (os.environ if environ is None else environ).get(KEEP_ALIVE_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_KEEP_ALIVE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{KEEP_ALIVE_ENV} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{KEEP_ALIVE_ENV} must be > 0, got {raw!r}")
    return value


FAST_LANE_ENV = "FAST_LANE"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def fast_lane_enabled(environ: dict[str, str] | None = None) -> bool:
    """Whether plain GETs of /api/poll and /api/events take the fast lane (FAST_LANE, on)."""
    raw = (os.environ if environ is None else environ).get(FAST_LANE_ENV, "").strip().lower()
    if raw == "" or raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{FAST_LANE_ENV} must be true or false, got {raw!r}")


def install(fast_lane: bool | None = None) -> None:
    """Make `hypercorn.asyncio.serve` build TimerTCPServer for each connection, with the
    fast lane unless `fast_lane` (default: FAST_LANE) says no."""
    global _fast_lane
    _fast_lane = fast_lane_enabled() if fast_lane is None else fast_lane
    hypercorn_run.TCPServer = TimerTCPServer  # type: ignore[attr-defined]


_fast_lane = False


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


def _idle_connections(context: WorkerContext) -> _IdleConnections:
    idle = _WORKERS.get(context)
    if idle is None:
        idle = _WORKERS[context] = _IdleConnections(context)
    return idle


class IdleTimer:
    """Stands in for Hypercorn's AsyncioSingleTask as `TCPServer.idle_task`."""

    def __init__(self, server: TimerTCPServer, idle: _IdleConnections) -> None:
        self._server = server
        self._idle = idle
        self._handle: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        # Bumped by every arm/disarm: a close scheduled by an expiry is dropped when a
        # request arrived between the expiry and the close (Hypercorn would close it).
        self._generation = 0

    def arm(self) -> None:
        self.disarm()
        self._idle.armed.add(self)
        if self._idle.terminated:
            self.expire()
        else:
            loop = self._server.loop
            self._handle = loop.call_later(self._server.config.keep_alive_timeout, self.expire)

    def disarm(self) -> None:
        self._generation += 1
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._idle.armed.discard(self)

    def expire(self) -> None:
        if self._handle is not None:  # expired by the shutdown before its time
            self._handle.cancel()
            self._handle = None
        self._idle.armed.discard(self)
        if self._closing is None:
            self._closing = self._server.loop.create_task(self._close(self._generation))

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
        self.disarm()


class TimerTCPServer(TCPServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_timer = IdleTimer(self, _idle_connections(self.context))
        self.idle_task = self.idle_timer  # type: ignore[assignment]
        # Not with a read timeout (Hypercorn's read loop is kept as is there) nor with
        # server names to check (the lane does not check Host against them).
        self.lane = (
            FastLane(self)
            if _fast_lane and self.config.read_timeout is None and not self.config.server_names
            else None
        )

    async def protocol_send(self, event: Event) -> None:
        # As Hypercorn's, with the idle updates as plain calls (no lock, no task).
        if isinstance(event, RawData):
            async with self.send_lock:
                try:
                    self.writer.write(event.data)
                    await self.writer.drain()
                except (ConnectionError, RuntimeError):
                    await self.protocol.handle(Closed())
        elif isinstance(event, Closed):
            await self._close()
        elif isinstance(event, Updated):
            if event.idle:
                self.idle_timer.arm()
            else:
                self.idle_timer.disarm()

    async def _read_data(self) -> None:
        if self.config.read_timeout is not None:
            await super()._read_data()
            return
        # Without a read timeout, no wait_for wrapper around each read.
        reader = self.reader
        lane = self.lane
        while not reader.at_eof():
            try:
                data = await reader.read(MAX_RECV)
            except (ConnectionError, OSError, TimeoutError):
                break
            if lane is not None and data and lane.wants():
                await lane.feed(data)
            else:
                if lane is not None:
                    await lane.end()  # (EOF: a partial head it held goes first)
                await self.protocol.handle(RawData(data))
        if lane is not None:
            await lane.end()
        await self.protocol.handle(Closed())
