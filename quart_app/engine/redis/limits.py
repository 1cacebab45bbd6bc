"""The limits of PROTOCOL 3.6 in Redis: write rate limits and open streams per user.

Keys (under the engine's prefix):

==============================  ==============================================================
``rl:<policy>:<subject>``       GCRA theoretical arrival time (ms, Redis clock), PX-expiring
``limits:instances``            set of instances that count streams
``limits:instance:<id>``        hash subject -> open streams on that instance, ``#`` = whole
==============================  ==============================================================

Rate limits are one script, one key, one round trip, on Redis' clock (lua/rate_limit.lua).
Stream counts live per instance and are summed over the instances whose presence deadline
(``presence:instances``, kept by the presence scripts) has not passed: a crashed instance's
streams stop counting once its deadline passes (at most 0.7 x PRESENCE_TTL_SECONDS), with no
cleanup needed first. This instance's counts are the truth kept here; the Redis hash mirrors
them and is re-synced whole when it is found missing (Redis lost its data, or another
instance removed it while this one looked dead) or after a failed call.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from ..base import EngineUnavailable
from ..rate_limit import RateDecision
from .connection import COMMAND_TIMEOUT
from .script_lane import ScriptLane
from .scripts import LUA_DIR, Run, load_script

log = logging.getLogger(__name__)


@dataclass
class PresenceRider:
    """A presence change (presence_change.lua's keys and arguments) to run in the admission's
    round trip, only if the stream is admitted. `reply` is that script's {status, message},
    None when it did not run in Redis (Redis unreachable: the stream was admitted open)."""

    keys: list[str]
    args: list[Any]
    reply: list[Any] | None = None


def admit_enter_script(bus_publish: str) -> str:
    """lua/stream_admit_enter.lua after the two scripts it runs, each wrapped in a function
    whose KEYS and ARGV are its parameters (see that file)."""

    def wrapped(name: str, files: tuple[str, ...]) -> str:
        body = "\n".join((LUA_DIR / file).read_text() for file in files)
        return f"local function {name}(KEYS, ARGV)\n{body}\nend\n"

    return (
        f"local BUS_PUBLISH = '{bus_publish}'\n"
        + wrapped("admit", ("_streams.lua", "stream_admit.lua"))
        + wrapped("change", ("_log.lua", "_presence.lua", "presence_change.lua"))
        + (LUA_DIR / "stream_admit_enter.lua").read_text()
    )


class RedisLimits:
    """Rate limits and stream counts of one instance. `run` bounds each call (the engine's
    `_cmd`: EngineUnavailable when Redis does not answer)."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        instance_id: str,
        run: Run,
        *,
        bus_publish: str = "PUBLISH",
        lane_bound: float = COMMAND_TIMEOUT,
    ) -> None:
        self._prefix = prefix
        self._instance_id = instance_id
        self._run = run
        self._rate = client.register_script(load_script(("rate_limit.lua",)))

        # A storm's admissions, on a connection of their own each, in batches (script_lane.py).
        def lane(script: str) -> ScriptLane:
            return ScriptLane(client.register_script(script), run, bound=lane_bound)

        self._admit = lane(load_script(("_streams.lua", "stream_admit.lua")))
        self._admit_enter = lane(admit_enter_script(bus_publish))
        # A storm's ends too: thousands of streams closing at once (a network blip, a drain).
        self._release = lane(load_script(("_streams.lua", "stream_release.lua")))
        self._sync = client.register_script(load_script(("_streams.lua", "stream_sync.lua")))
        self._keys = [
            prefix + "presence:instances",
            prefix + "limits:instances",
            f"{prefix}limits:instance:{instance_id}",
        ]
        self._local: dict[str, int] = {}
        self._dirty = True  # the Redis mirror needs a whole sync before it is trusted
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._sync_done = asyncio.Event()
        self._sync_done.set()
        self._closed = False

    async def close(self) -> None:
        """The instance stopped: streams still ending (a drain's last) are counted down here
        only, as its counts in Redis lapse with its presence."""
        self._closed = True
        lanes = (self._admit, self._admit_enter, self._release)
        await asyncio.gather(*(lane.close() for lane in lanes), return_exceptions=True)

    async def rate_limit(self, key: str, rate: int) -> RateDecision:
        allowed, remaining, retry_ms, reset_ms = await self._run(
            self._rate(keys=[f"{self._prefix}rl:{key}"], args=[rate])
        )
        return RateDecision(bool(allowed), rate, int(remaining), float(retry_ms), float(reset_ms))

    async def admit(self, subject: str, limit: int, rider: PresenceRider | None = None) -> bool:
        """Count one more stream of `subject` here if the cluster holds fewer than `limit`.
        Redis unreachable: admitted (fail open: streams are the service's purpose; the
        per-instance limit still holds) and counted here, synced when Redis is back.
        With a `rider`, its presence change runs in the same script when admitted."""
        args = [self._instance_id, subject, limit, self._prefix + "limits:instance:"]
        try:
            for _attempt in range(2):
                if self._dirty:
                    await self._resync()
                await self._begin()
                try:
                    if rider is None:
                        status, _open = await self._call_lane(self._admit, args)
                    else:
                        reply = await self._call_lane(
                            self._admit_enter, args + rider.args, rider.keys
                        )
                        status, _open = reply[0], reply[1]
                        if status == 1:
                            rider.reply = reply[2:]
                    if status == 1:
                        self._local[subject] = self._local.get(subject, 0) + 1
                        return True
                    if status == 0:
                        return False
                    self._dirty = True  # -1: this instance's counts are gone from Redis
                finally:
                    self._end()
        except EngineUnavailable as exc:
            log.warning("stream admitted without the per-user check: %s", exc)
            self._begin_nowait()
            self._local[subject] = self._local.get(subject, 0) + 1
            self._dirty = True
            self._end()
            return True
        return False  # the counts vanished twice in a row: refuse rather than guess

    async def release(self, subject: str) -> None:
        """One stream of `subject` closed here. Never raises for an outage."""
        await self._begin()
        try:
            count = self._local.get(subject, 0)
            if count <= 0:
                return
            if count == 1:
                del self._local[subject]
            else:
                self._local[subject] = count - 1
            if self._closed:
                return
            if not self._dirty:
                if await self._call_lane(self._release, [self._instance_id, subject]) == -1:
                    self._dirty = True
        except Exception as exc:  # noqa: BLE001 - the local count is the truth; synced later
            self._dirty = True
            if not self._closed:  # (cut short by the stop: nothing to sync any more)
                log.warning("stream count not released in Redis (%s); will re-sync", exc)
        finally:
            self._end()
        if self._dirty and not self._closed:
            try:
                await self._resync()
            except Exception as exc:  # noqa: BLE001 - retried by the next call
                log.warning("stream counts not re-synced (%s)", exc)

    # A whole sync replaces Redis' copy with the local counts. It must not overlap an
    # admission or release: one that Redis applied but this process has not counted yet
    # (or the reverse) would be lost. Calls are "in flight" between _begin and _end; a sync
    # waits until none is, and new ones wait for the sync.
    async def _begin(self) -> None:
        while not self._sync_done.is_set():
            await self._sync_done.wait()
        self._begin_nowait()

    def _begin_nowait(self) -> None:
        self._in_flight += 1
        self._drained.clear()

    def _end(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._drained.set()

    async def _resync(self) -> None:
        if not self._sync_done.is_set():  # another caller is syncing: its sync will do
            await self._sync_done.wait()
            return
        self._sync_done.clear()
        try:
            await self._drained.wait()
            if self._dirty:
                await self._sync_all()
        finally:
            self._sync_done.set()

    async def _call(self, script: Any, args: list[Any], keys: list[str] | None = None) -> Any:
        try:
            return await self._run(script(keys=self._keys if keys is None else keys, args=args))
        except Exception:
            self._dirty = True
            raise

    async def _call_lane(
        self, lane: ScriptLane, args: list[Any], rider_keys: list[str] | None = None
    ) -> Any:
        # The call stays in flight until the lane settles it, even if our caller leaves (a
        # client that gave up, a shutdown): a whole sync must not run before it, or a call
        # sent after the sync would count a stream nobody holds, with nothing marked dirty.
        # The lane bounds each batch (`lane_bound`): no timer of our own per call.
        call = lane.submit(self._keys + (rider_keys or []), args)
        self._begin_nowait()
        call.add_done_callback(self._settled)
        try:
            return await asyncio.shield(call)
        except BaseException:
            # Its outcome unknown to us (the caller left, no answer in time): the script may
            # have run all the same, and a whole sync puts Redis' counts back to ours.
            self._dirty = True
            raise

    def _settled(self, call: asyncio.Future[Any]) -> None:
        if not call.cancelled():
            call.exception()  # (retrieved: its caller may have left)
        self._end()

    async def _sync_all(self) -> None:
        self._dirty = False
        args: list[Any] = [self._instance_id]
        for subject, count in self._local.items():
            args += [subject, count]
        await self._call(self._sync, args)
