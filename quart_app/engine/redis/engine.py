"""`RedisEngine`: the Redis engine composed of its parts, one module per job:

- connection.py: the redis-py clients built from REDIS_URL, and the pub/sub seam;
- scripts.py: the Lua scripts (every write is one script, atomic);
- log.py: publish, read, the epoch;
- live_feed.py: delivery to this instance's listeners (bus, gate, catch-up, probe);
- board.py: the board reads and the rebuild;
- presence.py: who is online, across instances;
- limits.py: rate limits and open streams per user (PROTOCOL 3.6);
- calls.py: calls between instances (a subscribe routed to the instance holding the stream).

Failures. Every call is bounded by asyncio.timeout (5 s) and raises `EngineUnavailable` for
connection errors and timeouts; commands are never retried by redis-py (a script must not run
twice), so the callers retry: the outbox for publications, the heartbeat for presence
(`presence_enter`/`presence_leave` never raise: the local count is kept and re-synced).
`applied_ttl_seconds` (default 7 days) bounds how long a publication key is remembered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from ..base import Engine, EngineUnavailable, Event, NoSuchInstance, Publication, Ranked
from ..board_state import BoardLoader
from ..rate_limit import RateDecision
from .board import RedisBoard
from .calls import InstanceCalls
from .connection import bounded, connect
from .keys import RedisKeys
from .limits import RedisLimits
from .live_feed import LiveFeed, probe_idle_seconds
from .log import RedisLog
from .presence import RedisPresence
from .scripts import Scripts

log = logging.getLogger(__name__)


class RedisEngine(Engine):
    """Board, event log and presence in Redis, shared by any number of instances."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "lrp:",
        event_log_size: int = 10_000,
        backfill_interval: float = 1.0,
        presence_ttl_seconds: float = 15.0,
        applied_ttl_seconds: float = 7 * 24 * 3600.0,
        **_: object,
    ) -> None:
        super().__init__()
        self._stopping = False
        self._connection = connect(
            url, bus_health_check_interval=max(1, int(probe_idle_seconds(backfill_interval)))
        )
        prefix = self._connection.key_prefix(prefix)  # on Redis Cluster: one hash slot
        keys = RedisKeys(prefix)
        self._scripts = scripts = Scripts(
            self._connection.client, bus_publish=self._connection.bus_publish
        )
        self._log = RedisLog(
            scripts,
            keys,
            event_log_size=event_log_size,
            applied_ttl_seconds=applied_ttl_seconds,
        )
        self._feed = LiveFeed(
            self._connection,
            self._log,
            keys.bus,
            self.instance_id,
            self._deliver,
            self._is_stopping,
            backfill_interval=backfill_interval,
        )
        self._board = RedisBoard(scripts, keys)
        self._presence = RedisPresence(
            self._connection.client,
            scripts,
            keys,
            self.instance_id,
            self._log.script_args,
            self._feed.offer_message,
            self._is_stopping,
            ttl_seconds=presence_ttl_seconds,
        )
        self._limits = RedisLimits(
            self._connection.client,
            prefix,
            self.instance_id,
            bounded,
            bus_publish=self._connection.bus_publish,
        )
        self._calls = InstanceCalls(self._connection, prefix, self.instance_id)
        self._calls_starting: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _is_stopping(self) -> bool:
        return self._stopping

    # seams the tests reach through (a crash without clean-up, a proxied subscriber)
    @property
    def _redis(self) -> aioredis.Redis:
        return self._connection.client

    @property
    def _sub(self) -> aioredis.Redis:
        return self._connection.bus_client

    @_sub.setter
    def _sub(self, client: aioredis.Redis) -> None:
        self._connection.bus_client = client

    @property
    def _subscribed(self) -> asyncio.Event | None:
        return self._feed.subscribed

    @property
    def _live_epoch(self) -> str | None:
        return self._feed.live_epoch

    # lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, take the head of the log as the live position, register for presence and
        start the background tasks. When Redis does not answer, start anyway: the tasks keep
        trying, and `ping()` says False meanwhile."""
        self._stopping = False
        self._feed.prepare()
        reachable = True
        try:
            epoch, head, _status, _first, _events = await self._log.read(None, 0)
            self._feed.go_live(epoch, head)
            await self._presence.sync()
            self._presence.mark_healthy()
        except EngineUnavailable as exc:
            reachable = False
            log.warning("Redis does not answer at start (%s); retrying in the background", exc)
        self._tasks = [
            asyncio.create_task(self._feed.bus_loop(), name="lrp-redis-bus"),
            asyncio.create_task(self._feed.catch_up_loop(), name="lrp-redis-catch-up"),
            asyncio.create_task(self._presence.loop(), name="lrp-redis-presence"),
        ]
        if reachable:  # be live when start() returns
            await self._calls.start(self._answer_call)
            subscribed = self._feed.subscribed
            assert subscribed is not None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await subscribed.wait()
        else:
            self._calls_starting = asyncio.create_task(self._calls.start(self._answer_call))

    async def stop(self) -> None:
        """Stop the tasks, remove this instance's presence (offline events for the players
        only it held), close the connections."""
        self._stopping = True
        for _ in range(50):  # the loops also check _stopping, should a cancel get lost
            pending = [task for task in self._tasks if not task.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.1)
        self._tasks = []
        if self._calls_starting is not None:
            self._calls_starting.cancel()
            await asyncio.wait([self._calls_starting], timeout=1.0)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._calls.stop()
        try:
            async with asyncio.timeout(2.0):
                await self._presence.drop_instance(self.instance_id, force=True)
        except Exception as exc:  # noqa: BLE001 - best effort; a sweep will do it
            log.warning("could not remove this instance's presence: %s", exc)
        self._presence.forget_local()
        await self._limits.close()
        await self._connection.close()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2.0):
                return await self._connection.ping()
        except Exception:  # noqa: BLE001 - readiness must never raise
            return False

    @property
    def epoch(self) -> str:
        return self._log.epoch

    # the event log (log.py, delivered through live_feed.py) -----------------------------------
    async def publish(self, publication: Publication) -> list[Event]:
        epoch, events = await self._log.publish(publication)
        self._feed.offer(epoch, events)
        return events

    async def publish_many(
        self, publications: Sequence[Publication]
    ) -> list[list[Event] | Exception]:
        out: list[list[Event] | Exception] = []
        for reply in await self._log.publish_many(publications):
            if isinstance(reply, Exception):
                out.append(reply)
            else:
                self._feed.offer(*reply)
                out.append(reply[1])
        return out

    async def head(self) -> int:
        return await self._log.head()

    async def read_after(self, seq: int, limit: int) -> list[Event]:
        return await self._log.read_after(seq, limit)

    # calls between instances (calls.py) -------------------------------------------------------
    async def call(
        self, instance_id: str, request: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Another instance's handler, through Redis pub/sub."""
        if instance_id == self.instance_id:
            return await super().call(instance_id, request, timeout)
        async with asyncio.timeout(timeout):  # the publish too: no socket timeout here
            return await self._calls.call(instance_id, request, timeout)

    async def _answer_call(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._call_handler is None:
            raise NoSuchInstance(self.instance_id)
        return await self._call_handler(request)

    # the board (board.py) ---------------------------------------------------------------------
    async def board_page(self, offset: int, limit: int) -> tuple[list[Ranked], int]:
        return await self._board.page(offset, limit)

    async def board_page_json(self, offset: int, limit: int) -> tuple[int, str, int]:
        return await self._board.page_json(offset, limit, self._log)

    async def board_player(self, player_id: str) -> Ranked | None:
        return await self._board.player(player_id)

    async def board_around(self, player_id: str, radius: int) -> list[Ranked]:
        return await self._board.around(player_id, radius)

    async def board_replace(self, load: BoardLoader, *, take_over: bool = True) -> bool:
        return await self._board.replace(load, take_over=take_over)

    # presence (presence.py) -------------------------------------------------------------------
    async def presence_enter(self, player_id: str) -> None:
        await self._presence.enter(player_id)

    async def presence_leave(self, player_id: str) -> None:
        await self._presence.leave(player_id)

    async def presence_poll(self, player_id: str) -> None:
        await self._presence.poll(player_id)

    async def online_count(self) -> int:
        return await self._presence.online_count()

    async def is_online(self, player_id: str) -> bool:
        return await self._presence.is_online(player_id)

    # limits (limits.py) -----------------------------------------------------------------------
    async def rate_limit(self, key: str, rate: int) -> RateDecision:
        return await self._limits.rate_limit(key, rate)

    async def stream_admit(self, subject: str, limit: int) -> bool:
        return await self._limits.admit(subject, limit)

    async def stream_release(self, subject: str) -> None:
        await self._limits.release(subject)

    async def stream_admit_and_enter(self, subject: str, limit: int, player_id: str) -> bool:
        # One round trip for both (lua/stream_admit_enter.lua): a reconnect storm's set-up.
        return await self._presence.enter_admitted(
            player_id, lambda rider: self._limits.admit(subject, limit, rider)
        )
