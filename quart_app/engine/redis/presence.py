"""Presence in Redis: which players are online across every instance.

Keys: ``presence:instances`` (zset instance id -> deadline, ms on Redis' clock),
``presence:instance:<id>`` (hash player -> connections on that instance, ``#op``),
``presence:conns`` (hash player -> connections, cluster-wide), ``presence:polls`` (zset player
-> long-poll presence deadline, ms), ``presence:online`` (set of online players). Players are
stored as their JSON text, so that the Lua scripts build the ``player:online``/
``player:offline`` data by concatenation, byte-identical to Python.

Each instance has an id, registers in ``presence:instances`` with a deadline (0.7 x
`presence_ttl_seconds`, refreshed every ttl/5), and mirrors its local connection counts in its
own hash and in the cluster-wide ``presence:conns``. Every instance sweeps every min(1 s,
ttl/10): expired long-polls, and instances past their deadline (a crash), whose counts it
removes; the drop script re-checks the deadline, so concurrent sweepers drop an instance once.
Online/offline events are appended to the log by the same scripts that change the counts, once
per transition. The local counts are the truth: a presence call that fails (Redis down) marks
the state dirty, and the next heartbeat re-syncs the whole local state; so does an instance
that finds itself unregistered (dropped as dead, or Redis lost its data). Op numbers keep a
late single change from being applied on top of a sync that already counted it. After Redis
was unreachable or stalled longer than the deadline, every instance looks dead: an instance
drops others only after one deadline of normal service of its own, so an outage does not end
in a storm of offline/online events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from ..base import EngineUnavailable
from .connection import bounded
from .keys import RedisKeys
from .limits import PresenceRider
from .scripts import Scripts

log = logging.getLogger(__name__)

_SWEEP_PLAYERS = 1000
_SWEEP_INSTANCES = 16


def _poll_presence_ms() -> int:
    # Read at call time from the package, where the tests shorten it.
    from quart_app.engine import redis as package

    return int(package.POLL_PRESENCE_SECONDS * 1000)


class RedisPresence:
    """This instance's side of presence. `script_args` gives the log arguments of a script
    run, `offer_message` delivers the events a script appended, `stopping` ends the loop."""

    def __init__(
        self,
        client: aioredis.Redis,
        scripts: Scripts,
        keys: RedisKeys,
        instance_id: str,
        script_args: Callable[[], list[str]],
        offer_message: Callable[[str], None],
        stopping: Callable[[], bool],
        *,
        ttl_seconds: float,
    ) -> None:
        self._client = client
        self._scripts = scripts
        self._keys = keys
        self._instance_id = instance_id
        self._script_args = script_args
        self._offer_message = offer_message
        self._stopping = stopping
        ttl = float(ttl_seconds)
        self._deadline_ms = str(int(ttl * 700))
        self._beat_interval = ttl / 5
        self._sweep_interval = min(1.0, ttl / 10)
        self._stall = self._sweep_interval + self._beat_interval
        # this instance's connections, by player JSON; the truth for this instance
        self._local: dict[str, int] = {}
        self._op = 0
        self._dirty = True
        self._healthy_since: float | None = None  # presence calls succeeding since then
        self._last_ok = 0.0

    def _keys_of(self, instance_id: str) -> list[str]:
        return self._keys.presence_of(instance_id)

    def mark_healthy(self) -> None:
        """Redis answered at start: count normal service from now."""
        self._healthy_since = self._last_ok = time.monotonic()

    def forget_local(self) -> None:
        self._local.clear()

    def _change_args(self, pid: str, delta: int) -> list[Any]:
        self._op += 1
        return [*self._script_args(), self._instance_id, pid, delta, self._op]

    async def _change(self, pid: str, delta: int) -> None:
        """Mirror one local change; never raises for an outage (the local count is the truth,
        the next heartbeat re-syncs)."""
        args = self._change_args(pid, delta)
        try:
            reply = await self._scripts.run(
                "presence_change", self._keys_of(self._instance_id), args
            )
            await self._changed(reply)
        except EngineUnavailable as exc:
            self._dirty = True
            log.warning("presence not recorded in Redis (%s); will re-sync", exc)

    async def _changed(self, reply: list[Any]) -> None:
        """presence_change.lua answered {status, bus message}."""
        status, message = reply
        self._offer_message(message)
        if status == 0 and not self._stopping():
            await self.sync()

    async def enter_admitted(
        self, player_id: str, admit: Callable[[PresenceRider], Awaitable[bool]]
    ) -> bool:
        """`enter`, riding on a stream admission's round trip (limits.py): counted only when
        `admit` admits the stream; refused, nothing changed. Never raises for an outage."""
        pid = json.dumps(player_id)
        self._local[pid] = self._local.get(pid, 0) + 1
        rider = PresenceRider(self._keys_of(self._instance_id), self._change_args(pid, 1))
        op = self._op
        try:
            admitted = await admit(rider)
        except BaseException:
            self._undo_enter(pid, op)
            # Redis may have counted it all the same (the call went; the caller stopped
            # waiting, or its answer was lost): the next sync puts the local counts back.
            self._dirty = True
            raise
        if not admitted:
            self._undo_enter(pid, op)
            return False
        if rider.reply is None:  # admitted without Redis: counted here, re-synced later
            self._dirty = True
            return True
        try:
            await self._changed(rider.reply)
        except EngineUnavailable as exc:
            self._dirty = True
            log.warning("presence not synced to Redis (%s); will re-sync", exc)
        return True

    def _undo_enter(self, pid: str, op: int) -> None:
        count = self._local.get(pid, 0) - 1
        if count > 0:
            self._local[pid] = count
        else:
            self._local.pop(pid, None)
        if self._op != op:  # a sync may have sent the count with this entry meanwhile
            self._dirty = True

    async def sync(self) -> None:
        """Replace this instance's counts in Redis with the local ones, and register it."""
        self._dirty = False
        self._op += 1
        args: list[Any] = [*self._script_args(), self._instance_id, self._deadline_ms, self._op]
        for pid, count in self._local.items():
            args += [pid, count]
        try:
            _status, message = await self._scripts.run(
                "presence_sync", self._keys_of(self._instance_id), args
            )
        except EngineUnavailable:
            self._dirty = True
            raise
        self._offer_message(message)

    async def drop_instance(self, instance_id: str, *, force: bool) -> None:
        args = [*self._script_args(), instance_id, "1" if force else "0"]
        _status, message = await self._scripts.run(
            "presence_drop", self._keys_of(instance_id), args
        )
        self._offer_message(message)

    async def _heartbeat(self) -> None:
        if not self._dirty:
            args = [*self._script_args(), self._instance_id, self._deadline_ms]
            if await self._scripts.run("presence_beat", self._keys_of(self._instance_id), args):
                return
        await self.sync()

    async def sweep(self) -> None:
        args = [*self._script_args(), _SWEEP_PLAYERS, _SWEEP_INSTANCES]
        reply = await self._scripts.run("presence_sweep", self._keys_of(self._instance_id), args)
        self._offer_message(reply[0])
        # When this instance could not talk to Redis for a while (Redis down or stalled, or
        # this process stalled), the others may not have either, and look dead: give them
        # one deadline of normal service to beat again before dropping anyone.
        now = time.monotonic()
        if self._healthy_since is None or now - self._last_ok > self._stall:
            self._healthy_since = now
        self._last_ok = now
        settled = now - self._healthy_since > int(self._deadline_ms) / 1000
        for dead in reply[1:]:
            if dead == self._instance_id:
                await self._heartbeat()  # we were stalled, not dead
                continue
            if not settled:
                continue
            log.warning("instance %s missed its presence heartbeats: dropping it", dead)
            await self.drop_instance(dead, force=False)

    async def loop(self) -> None:
        next_beat = 0.0
        failures = 0
        while not self._stopping():
            await asyncio.sleep(self._sweep_interval)
            try:
                if time.monotonic() >= next_beat or self._dirty:
                    await self._heartbeat()
                    next_beat = time.monotonic() + self._beat_interval
                await self.sweep()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - survive anything
                failures += 1
                self._healthy_since = None
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "presence heartbeat/sweep failed: %s",
                    exc,
                )

    async def enter(self, player_id: str) -> None:
        """One more connection here. Never raises for a Redis outage (re-synced later)."""
        pid = json.dumps(player_id)
        self._local[pid] = self._local.get(pid, 0) + 1
        await self._change(pid, 1)

    async def leave(self, player_id: str) -> None:
        """One connection fewer here. Never raises for a Redis outage (re-synced later)."""
        pid = json.dumps(player_id)
        count = self._local.get(pid, 0)
        if count <= 0:
            return
        if count == 1:
            del self._local[pid]
        else:
            self._local[pid] = count - 1
        await self._change(pid, -1)

    async def poll(self, player_id: str) -> None:
        args = [*self._script_args(), json.dumps(player_id), _poll_presence_ms()]
        _status, message = await self._scripts.run(
            "presence_poll", self._keys_of(self._instance_id), args
        )
        self._offer_message(message)

    async def online_count(self) -> int:
        return int(await bounded(self._client.scard(self._keys.online)))

    async def is_online(self, player_id: str) -> bool:
        online = self._client.sismember(self._keys.online, json.dumps(player_id))
        return bool(await bounded(online))
