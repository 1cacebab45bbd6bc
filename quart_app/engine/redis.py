"""The Redis engine: board, event log and presence in Redis, shared by any number of instances.

Keys (all under `prefix`, default ``lrp:``; give the prefix a hash tag such as ``{lrp}:`` to run
on Redis Cluster, every script then touches one slot):

==============================  ==============================================================
``meta``                        hash ``{epoch, seq}``: the log's identity and last seq, one unit
``log``                         stream, entry id ``<seq>-0``, fields ``e`` (name), ``r`` (rooms
                                JSON), ``t`` (the envelope text); trimmed to exactly
                                `event_log_size` entries
``bus``                         pub/sub channel: one message per script run that appended events
``applied:<key>``               idempotency guard of a publication key (SET NX, `applied_ttl`)
``board`` / ``players`` /       zset player -> -rating; hash player -> BoardEntry JSON;
``versions``                    hash player -> version (the order-independence guard)
``board:rebuild``,              a running `board_replace`: its token, and the board it builds
``board:next:*``
``board:ready``                 set by the swap of a rebuild: the board is whole. A data loss
                                removes it, and the board reads then answer "incomplete"
                                (BoardIncomplete: the caller reads SQL) until a rebuild ends
``presence:instances``          zset instance id -> deadline (ms, Redis clock)
``presence:instance:<id>``      hash player -> connections on that instance, ``#op``
``presence:conns``              hash player -> connections, cluster-wide
``presence:polls``              zset player -> long-poll presence deadline (ms)
``presence:online``             set of online players
==============================  ==============================================================

Players are stored in the presence keys as their JSON text, so that the Lua scripts build
the ``player:online``/``player:offline`` data by concatenation, byte-identical to Python.

Every write is one Lua script (``lua/*.lua``, loaded with ``register_script``: EVALSHA, and a
reload on NOSCRIPT), so that board rows, the seq, the log entry and the bus message of one
publication happen together or not at all.

Epochs. The meta hash holds the epoch and the seq together; a script that finds it gone (Redis
restarted without persistence, FLUSHALL, eviction) starts a new epoch with an empty log, using
a fresh random token sent along with every call. Every reply carries the epoch, and
`RedisEngine.epoch` follows it, so old cursors then get ``LogGap("unknown")``.

Live delivery (`listen`). Every event reaches the listeners through one synchronous gate,
`_offer`, which delivers a batch only when it continues exactly after the last delivered seq
of the current epoch (dropping what was delivered already). Three sources feed it:

- the bus subscriber task: messages from every instance (its own included);
- `publish` and the presence calls of this instance, with the events their script just
  appended: these are delivered at once when nothing is missing before them, so an
  instance's listeners have its own events when `publish()` returns, as with the memory
  engine; otherwise they are left to the bus, which carries everything in seq order;
- the catch-up task, reading the log: woken when a bus message shows a gap (pub/sub is
  at-most-once: messages published around a reconnect are lost), after every (re)subscribe,
  and every `backfill_interval` seconds, so a quiet gap is found too. It is also what notices
  a new epoch: it then delivers the new epoch's events from seq 1.

Since every path goes through the gate, which runs on the event loop without awaiting, events
are delivered in seq order, without gaps or repeats, whatever arrives first. The subscriber
reconnects with a backoff (capped at 1 s), sets ``health_check_interval``, and, when the bus
has been quiet for a while, publishes a probe to itself: a probe that does not come back means
a dead subscription, which is then reopened.

Presence. Each instance has an id, registers in ``presence:instances`` with a deadline
(0.7 x `presence_ttl_seconds`, refreshed every ttl/5), and mirrors its local connection counts
in its own hash and in the cluster-wide ``presence:conns``. Every instance sweeps every
min(1 s, ttl/10): expired long-polls, and instances past their deadline (a crash), whose counts
it removes; the drop script re-checks the deadline, so concurrent sweepers drop an instance
once. Online/offline events are appended by the same scripts that change the counts, once per
transition. The local counts are the truth: a presence call that fails (Redis down) marks the
state dirty, and the next heartbeat re-syncs the whole local state; so does an instance that
finds itself unregistered (dropped as dead, or Redis lost its data). Op numbers keep a late
single change from being applied on top of a sync that already counted it. After Redis was
unreachable or stalled longer than the deadline, every instance looks dead: an instance drops
others only after one deadline of normal service of its own, so an outage does not end in a
storm of offline/online events.

Failures. Every call is bounded by asyncio.timeout (5 s) and raises `EngineUnavailable` for
connection errors and timeouts; commands are never retried by redis-py (a script must not run
twice), so the callers retry: the outbox for publications, the heartbeat for presence
(`presence_enter`/`presence_leave` never raise: the local count is kept and re-synced).
`applied_ttl_seconds` (default 7 days) bounds how long a publication key is remembered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import base
from .base import (
    BoardEntry,
    Engine,
    EngineUnavailable,
    Event,
    LogGap,
    NoSuchInstance,
    Publication,
    Ranked,
    envelope_json,
)
from .board_state import BoardIncomplete, BoardLoader
from .calls_redis import InstanceCalls
from .cursor import encode
from .limits_redis import RedisLimits
from .rate_limit import RateDecision

log = logging.getLogger(__name__)

# Long-poll presence; read at call time so that tests can shorten it.
POLL_PRESENCE_SECONDS = base.POLL_PRESENCE_SECONDS

_LUA_DIR = Path(__file__).with_name("lua")
_SCRIPTS: dict[str, tuple[str, ...]] = {
    "publish": ("_log.lua", "_board.lua", "publish.lua"),
    "read": ("_log.lua", "read.lua"),
    "board_page": ("board_page.lua",),
    "board_player": ("board_player.lua",),
    "board_around": ("board_around.lua",),
    "board_begin": ("board_begin.lua",),
    "board_stage": ("_board.lua", "board_stage.lua"),
    "board_swap": ("board_swap.lua",),
    "presence_change": ("_log.lua", "_presence.lua", "presence_change.lua"),
    "presence_sync": ("_log.lua", "_presence.lua", "presence_sync.lua"),
    "presence_beat": ("_log.lua", "_presence.lua", "presence_beat.lua"),
    "presence_drop": ("_log.lua", "_presence.lua", "presence_drop.lua"),
    "presence_poll": ("_log.lua", "_presence.lua", "presence_poll.lua"),
    "presence_sweep": ("_log.lua", "_presence.lua", "presence_sweep.lua"),
}

REDIS_POOL_SIZE = 100  # commands in flight per instance; more wait (up to 5 s) for one
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)

_COMMAND_TIMEOUT = 5.0
_CATCH_UP_BATCH = 1000
_STAGE_BATCH = 500
_REBUILD_TTL_MS = 3_600_000
_SWEEP_PLAYERS = 1000
_SWEEP_INSTANCES = 16
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 1.0  # reconnect: at once, then 0.05 s doubling to 1 s
_PROBE = "~"  # bus messages starting with this are liveness probes, not events

_SAFE_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")


@functools.lru_cache(maxsize=1024)
def _check_name(name: str) -> str:
    # The envelope is built by concatenation (here and in Lua): the name must need no escaping.
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"bad event name {name!r}")
    return name


@functools.lru_cache(maxsize=4096)
def _rooms(rooms_json: str) -> tuple[str, ...]:
    return tuple(json.loads(rooms_json))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _token() -> str:
    return secrets.token_hex(6)


def _load_script(files: Sequence[str]) -> str:
    return "\n".join((_LUA_DIR / name).read_text() for name in files)


def _parse_message(message: str) -> tuple[str, list[Event]]:
    """A bus message (see lua/_log.lua) -> (epoch, events)."""
    epoch, first, count, rest = message.split("\n", 3)
    seq = int(first)
    parts = rest.split("\n")
    events = []
    for i in range(0, 3 * int(count), 3):
        events.append(Event(seq, encode(epoch, seq), _rooms(parts[i + 1]), parts[i], parts[i + 2]))
        seq += 1
    return epoch, events


class RedisEngine(Engine):
    """See the module docstring."""

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
        if event_log_size < 1:
            raise ValueError("event_log_size must be at least 1")
        self._url = url
        self._log_size = str(int(event_log_size))
        self._backfill_interval = float(backfill_interval)
        self._ttl = float(presence_ttl_seconds)
        self._applied_ttl_ms = str(int(applied_ttl_seconds * 1000))
        self._deadline_ms = str(int(self._ttl * 700))
        self._beat_interval = self._ttl / 5
        self._sweep_interval = min(1.0, self._ttl / 10)
        self._probe_idle = max(1.0, 3 * self._backfill_interval)
        self._probe_timeout = max(1.0, 2 * self._backfill_interval)

        p = prefix
        self._prefix = p
        self._bus = p + "bus"
        self._k_log = [p + "meta", p + "log"]
        self._k_board = [p + "board", p + "players", p + "versions"]
        self._k_read = [p + "board", p + "players", p + "board:ready"]
        self._k_next = [
            p + "board:rebuild",
            p + "board:next",
            p + "board:next:players",
            p + "board:next:versions",
        ]
        self._instance_id = self.instance_id  # (base) also names this instance's presence
        self._k_presence = [
            *self._k_log,
            p + "presence:instances",
            p + "presence:polls",
            p + "presence:conns",
            p + "presence:online",
        ]

        # socket_timeout=None: with a socket timeout, redis-py sends every command through
        # asyncio.wait_for(), which on Python 3.11 swallows a cancellation arriving meanwhile
        # (measured: ~95% of cancels of a task looping on PING were lost). Timeouts are
        # asyncio.timeout() around each call instead (`_run`, `_cmd`).
        # No command retries: a script that may have run must not run twice (a key-less
        # publication would be appended twice, a presence delta applied twice). A pooled
        # connection that the server closed is replaced when taken from the pool; any other
        # failure is EngineUnavailable, and the caller (outbox, presence re-sync) retries.
        # A blocking pool: a burst of more commands than connections (1,000 clients resuming)
        # waits for a free one; redis-py's default pool raised "Too many connections" at once.
        self._redis = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=REDIS_POOL_SIZE,
                timeout=5,
                decode_responses=True,
                socket_connect_timeout=2.0,
                socket_timeout=None,
                socket_keepalive=True,
                health_check_interval=10,
                retry=Retry(NoBackoff(), 0),
            )
        )
        # The subscriber: errors surface at once, the loop below reconnects and backfills.
        self._sub = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=None,
            socket_keepalive=True,
            health_check_interval=max(1, int(self._probe_idle)),
            retry=Retry(NoBackoff(), 0),
        )
        self._scripts = {
            name: self._redis.register_script(_load_script(files))
            for name, files in _SCRIPTS.items()
        }
        # calls between instances (a subscribe routed to the instance holding the stream)
        self._calls = InstanceCalls(self._redis, prefix, self.instance_id)
        self._calls_starting: asyncio.Task[None] | None = None

        self._epoch = ""
        # live delivery
        self._live_epoch: str | None = None
        self._last_seq = 0
        self._bus_max_seq = 0
        self._wake: asyncio.Event | None = None
        self._subscribed: asyncio.Event | None = None
        self._reconnect_bus = False
        self._last_bus_rx = 0.0
        self._probe_token: str | None = None
        self._probe_sent = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        # presence: this instance's connections, by player JSON; the truth for this instance
        self._local: dict[str, int] = {}
        self._op = 0
        self._presence_dirty = True
        self._healthy_since: float | None = None  # presence calls succeeding since then
        self._last_ok = 0.0
        self._stall = self._sweep_interval + self._beat_interval
        self._stopping = False

    # lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, take the head of the log as the live position, register for presence and
        start the background tasks. When Redis does not answer, start anyway: the tasks keep
        trying, and `ping()` says False meanwhile."""
        self._stopping = False
        self._wake = asyncio.Event()
        self._subscribed = asyncio.Event()
        reachable = True
        try:
            epoch, head, _status, _first, _events = await self._read(None, 0)
            self._live_epoch, self._last_seq = epoch, head
            await self._sync_presence()
            self._healthy_since = self._last_ok = time.monotonic()
        except EngineUnavailable as exc:
            reachable = False
            log.warning("Redis does not answer at start (%s); retrying in the background", exc)
        self._tasks = [
            asyncio.create_task(self._bus_loop(), name="lrp-redis-bus"),
            asyncio.create_task(self._catch_up_loop(), name="lrp-redis-catch-up"),
            asyncio.create_task(self._presence_loop(), name="lrp-redis-presence"),
        ]
        if reachable:  # be live when start() returns
            await self._calls.start(self._answer_call)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._subscribed.wait()
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
                await self._drop_instance(self._instance_id, force=True)
        except Exception as exc:  # noqa: BLE001 - best effort; a sweep will do it
            log.warning("could not remove this instance's presence: %s", exc)
        self._local.clear()
        await self._sub.aclose()
        await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2.0):
                return bool(await self._redis.ping())
        except Exception:  # noqa: BLE001 - readiness must never raise
            return False

    @property
    def epoch(self) -> str:
        return self._epoch

    # plumbing ---------------------------------------------------------------------------------
    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._cmd(self._scripts[name](keys=keys, args=args))

    @staticmethod
    async def _cmd(call: Awaitable[Any]) -> Any:
        """Await one Redis call: EngineUnavailable when Redis does not answer."""
        try:
            async with asyncio.timeout(_COMMAND_TIMEOUT):
                return await call
        except TimeoutError as exc:
            raise EngineUnavailable("redis: no answer in time") from exc
        except _UNAVAILABLE as exc:
            raise EngineUnavailable(f"redis: {exc}") from exc

    def _log_args(self) -> list[str]:
        return [_token(), self._log_size, self._bus]

    def _saw_epoch(self, epoch: str) -> None:
        if epoch and epoch != self._epoch:
            if self._epoch:
                log.warning(
                    "event log epoch changed %s -> %s: Redis lost its data", self._epoch, epoch
                )
            self._epoch = epoch

    def _offer(self, epoch: str, events: list[Event]) -> bool:
        """The one gate to the listeners (see the module docstring). False when the events do
        not continue the delivered stream (a gap, another epoch): the caller then lets the bus
        or the catch-up task bring them."""
        if not events:
            return True
        if epoch != self._live_epoch:
            return False
        skip = self._last_seq + 1 - events[0].seq
        if skip < 0:
            return False
        if skip >= len(events):
            return True
        batch = events[skip:] if skip else events
        self._last_seq = batch[-1].seq
        try:
            self._deliver(batch)
        except Exception:  # noqa: BLE001 - a failing listener must not stop the others' feed
            log.exception("an event listener failed")
        return True

    def _offer_message(self, message: str) -> None:
        """A bus message returned by one of this instance's scripts."""
        if message:
            epoch, events = _parse_message(message)
            self._saw_epoch(epoch)
            self._offer(epoch, events)

    # the event log ----------------------------------------------------------------------------
    async def publish(self, publication: Publication) -> list[Event]:
        ranked = publication.ranked_players()
        args: list[Any] = self._log_args()
        args += [
            "0" if publication.key is None else "1",
            self._applied_ttl_ms,
            str(publication.ts),
            len(publication.board),
            len(publication.events),
            len(ranked),
            *ranked,
        ]
        for entry in publication.board:
            args += [entry.player_id, entry.version, repr(-float(entry.rating)), entry.to_json()]
        encoded = []
        for draft in publication.events:
            rooms_json = _dumps(list(draft.rooms))
            parts, slots = draft.split_json()
            encoded.append((rooms_json, parts, slots))
            args += [_check_name(draft.event), rooms_json, len(slots), parts[0]]
            for slot, part in zip(slots, parts[1:], strict=True):
                args += [("a" if slot.when == "after" else "b") + slot.player_id, part]
        guard = self._prefix + "applied:" + (publication.key or "")
        reply = await self._run(
            "publish", [*self._k_log, guard, *self._k_board, *self._k_next], args
        )
        if reply[0] == 0 or not publication.events:
            return []
        epoch, seq = reply[1], int(reply[2])
        # The ranks the script filled in, as the text it put there (digits or null).
        ranks = {pid: (reply[3 + 2 * j], reply[4 + 2 * j]) for j, pid in enumerate(ranked)}
        self._saw_epoch(epoch)
        events = []
        for draft, (rooms_json, parts, slots) in zip(publication.events, encoded, strict=True):
            data_json = parts[0]
            for slot, part in zip(slots, parts[1:], strict=True):
                before, after = ranks[slot.player_id]
                data_json += (after if slot.when == "after" else before) + part
            cursor = encode(epoch, seq)
            text = envelope_json(cursor, rooms_json, draft.event, data_json, publication.ts)
            events.append(Event(seq, cursor, draft.rooms, draft.event, text))
            seq += 1
        self._offer(epoch, events)
        return events

    async def _read(self, after: int | None, limit: int) -> tuple[str, int, int, int, list[Event]]:
        """(epoch, head, status, oldest retained seq when expired, events) - see read.lua."""
        args = [*self._log_args(), "" if after is None else str(after), str(limit)]
        reply = await self._run("read", self._k_log, args)
        epoch, head, status, first = reply[0], int(reply[1]), int(reply[2]), int(reply[3])
        self._saw_epoch(epoch)
        events = []
        for i in range(4, len(reply), 4):
            seq = int(reply[i][:-2])  # "<seq>-0"
            events.append(
                Event(seq, encode(epoch, seq), _rooms(reply[i + 2]), reply[i + 1], reply[i + 3])
            )
        return epoch, head, status, first, events

    async def head(self) -> int:
        return (await self._read(None, 0))[1]

    async def read_after(self, seq: int, limit: int) -> list[Event]:
        expected = self._epoch
        epoch, _head, status, _first, events = await self._read(seq, limit)
        if expected and epoch != expected:
            # The caller checked its cursor against the epoch we had; the log is another one now.
            raise LogGap("unknown")
        if status == 1:
            raise LogGap("unknown")
        if status == 2:
            raise LogGap("expired")
        return events

    # live delivery ----------------------------------------------------------------------------
    async def _bus_loop(self) -> None:
        assert self._wake is not None and self._subscribed is not None
        backoff = 0.0
        while not self._stopping:
            pubsub = self._sub.pubsub()
            try:
                async with asyncio.timeout(_COMMAND_TIMEOUT):
                    await pubsub.subscribe(self._bus)
                # Wait for the confirmation: from here on nothing published is missed by the
                # subscription, so the catch-up below closes the gap behind it.
                deadline = time.monotonic() + 5.0
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "subscribe":
                        break
                    if time.monotonic() > deadline:
                        raise RedisTimeoutError("no subscribe confirmation")
                self._reconnect_bus = False
                self._probe_token = None
                self._last_bus_rx = time.monotonic()
                self._subscribed.set()
                self._wake.set()
                backoff = 0.0
                while not self._reconnect_bus:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._on_bus(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - survive anything, reconnect
                log.warning(
                    "event bus subscription lost (%s: %s); reconnecting", type(exc).__name__, exc
                )
            finally:
                self._subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if self._reconnect_bus:
                log.warning("event bus probe not echoed; resubscribing")
                self._reconnect_bus = False
            await asyncio.sleep(backoff)
            backoff = min(max(backoff * 2, _BACKOFF_MIN), _BACKOFF_MAX)

    def _on_bus(self, data: str) -> None:
        assert self._wake is not None
        self._last_bus_rx = time.monotonic()
        self._probe_token = None  # any message proves the subscription alive
        if data.startswith(_PROBE):
            return
        epoch, first, count, _rest = data.split("\n", 3)
        last = int(first) + int(count) - 1
        if epoch == self._live_epoch and last <= self._last_seq:
            return  # delivered already (this instance's own publication, typically)
        if epoch != self._live_epoch:
            self._wake.set()  # a new epoch (or a stale message): the catch-up task decides
            return
        self._bus_max_seq = max(self._bus_max_seq, last)
        if not self._offer(*_parse_message(data)):
            self._wake.set()  # messages were lost: backfill from the log

    async def _catch_up_loop(self) -> None:
        assert self._wake is not None
        failures = 0
        while not self._stopping:
            # (not asyncio.wait_for: on 3.11 it swallows a cancellation that coincides with
            # the event being set, and the task would then never end)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._backfill_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._catch_up()
                await self._probe()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - survive anything
                failures += 1
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "event log catch-up failed: %s",
                    exc,
                )
                await asyncio.sleep(min(_BACKOFF_MAX, _BACKOFF_MIN * 2**failures))

    async def _catch_up(self) -> None:
        """Deliver what the log holds past the last delivered seq; notice a new epoch."""
        for _ in range(10_000):
            if self._live_epoch is None:
                # First contact (Redis was down at start): go live from the head.
                epoch, head, *_ = await self._read(None, 0)
                self._live_epoch, self._last_seq, self._bus_max_seq = epoch, head, 0
                return
            epoch, head, status, first, events = await self._read(self._last_seq, _CATCH_UP_BATCH)
            if epoch != self._live_epoch:
                log.warning("new event log epoch %s: delivering it from the start", epoch)
                self._live_epoch, self._last_seq, self._bus_max_seq = epoch, 0, 0
                continue
            if status == 1:
                # Past the head within one epoch: the log went backwards without a new epoch
                # (should not happen). Follow the log from where it is.
                log.error("event log head %d is behind the delivered seq %d", head, self._last_seq)
                self._last_seq = head
                return
            if status == 2:
                log.error(
                    "listener fell behind the retained log: events %d..%d are lost",
                    self._last_seq + 1,
                    first - 1,
                )
                self._last_seq = max(self._last_seq, first - 1)
                continue
            self._offer(epoch, events)
            if self._last_seq >= max(head, self._bus_max_seq):
                return

    async def _probe(self) -> None:
        """End-to-end check of the subscription while the bus is quiet."""
        if self._subscribed is None or not self._subscribed.is_set():
            return
        now = time.monotonic()
        if self._probe_token is not None:
            if now - self._probe_sent > self._probe_timeout:
                self._reconnect_bus = True
            return
        if now - self._last_bus_rx > self._probe_idle:
            token = _PROBE + self._instance_id
            await self._cmd(self._redis.publish(self._bus, token))
            self._probe_token, self._probe_sent = token, now

    # calls between instances ------------------------------------------------------------------
    async def call(
        self, instance_id: str, request: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Another instance's handler, through Redis pub/sub (calls_redis.InstanceCalls)."""
        if instance_id == self.instance_id:
            return await super().call(instance_id, request, timeout)
        async with asyncio.timeout(timeout):  # the publish too: no socket timeout here
            return await self._calls.call(instance_id, request, timeout)

    async def _answer_call(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._call_handler is None:
            raise NoSuchInstance(self.instance_id)
        return await self._call_handler(request)

    # the board --------------------------------------------------------------------------------
    @staticmethod
    def _rows(rows: Sequence[str | None], first_rank: int) -> list[Ranked]:
        return [(first_rank + i, BoardEntry.from_json(row)) for i, row in enumerate(rows) if row]

    async def _read_board(self, script: str, args: list[Any]) -> Any:
        reply = await self._run(script, self._k_read, args)
        if reply == "incomplete":
            raise BoardIncomplete("the board has not been rebuilt since Redis lost its data")
        return reply

    async def board_page(self, offset: int, limit: int) -> tuple[list[Ranked], int]:
        offset = max(0, offset)
        reply = await self._read_board("board_page", [offset, max(1, limit)])
        rows = reply[1:] if limit > 0 else []
        return self._rows(rows, offset + 1), int(reply[0])

    async def board_player(self, player_id: str) -> Ranked | None:
        reply = await self._read_board("board_player", [player_id])
        if not reply or not reply[1]:
            return None
        return int(reply[0]) + 1, BoardEntry.from_json(reply[1])

    async def board_around(self, player_id: str, radius: int) -> list[Ranked]:
        reply = await self._read_board("board_around", [player_id, radius])
        if not reply:
            return []
        return self._rows(reply[1:], int(reply[0]) + 1)

    async def board_replace(self, load: BoardLoader) -> None:
        """Build the new board in ``board:next:*``, then rename it over the live one and mark
        it complete in one script: readers see the old or the new. The marker is set before
        `load()` reads the truth, so every row published after that read (its commit came
        later) goes into the new board too."""
        token = _token()
        marker = self._k_next
        await self._run("board_begin", marker, [token, _REBUILD_TTL_MS])
        entries = await load()
        for i in range(0, len(entries), _STAGE_BATCH):
            args: list[Any] = [token]
            for entry in entries[i : i + _STAGE_BATCH]:
                args += [
                    entry.player_id,
                    entry.version,
                    repr(-float(entry.rating)),
                    entry.to_json(),
                ]
            self._rebuild_status(await self._run("board_stage", marker, args))
        self._rebuild_status(
            await self._run(
                "board_swap", [marker[0], *self._k_board, *marker[1:], self._k_read[2]], [token]
            )
        )

    @staticmethod
    def _rebuild_status(status: int) -> None:
        if status == 0:
            raise RuntimeError("board rebuild interrupted: its marker is gone (Redis data loss?)")
        if status == -1:
            raise RuntimeError("board rebuild superseded by another one")

    # presence ---------------------------------------------------------------------------------
    def _presence_keys(self, instance_id: str) -> list[str]:
        return [*self._k_presence, f"{self._prefix}presence:instance:{instance_id}"]

    async def _presence_change(self, pid: str, delta: int) -> None:
        """Mirror one local change; never raises for an outage (the local count is the truth,
        the next heartbeat re-syncs)."""
        self._op += 1
        args = [*self._log_args(), self._instance_id, pid, delta, self._op]
        try:
            status, message = await self._run(
                "presence_change", self._presence_keys(self._instance_id), args
            )
            self._offer_message(message)
            if status == 0 and not self._stopping:
                await self._sync_presence()
        except EngineUnavailable as exc:
            self._presence_dirty = True
            log.warning("presence not recorded in Redis (%s); will re-sync", exc)

    async def _sync_presence(self) -> None:
        self._presence_dirty = False
        self._op += 1
        args: list[Any] = [*self._log_args(), self._instance_id, self._deadline_ms, self._op]
        for pid, count in self._local.items():
            args += [pid, count]
        try:
            _status, message = await self._run(
                "presence_sync", self._presence_keys(self._instance_id), args
            )
        except EngineUnavailable:
            self._presence_dirty = True
            raise
        self._offer_message(message)

    async def _drop_instance(self, instance_id: str, *, force: bool) -> None:
        args = [*self._log_args(), instance_id, "1" if force else "0"]
        _status, message = await self._run("presence_drop", self._presence_keys(instance_id), args)
        self._offer_message(message)

    async def _heartbeat(self) -> None:
        if not self._presence_dirty:
            args = [*self._log_args(), self._instance_id, self._deadline_ms]
            if await self._run("presence_beat", self._presence_keys(self._instance_id), args):
                return
        await self._sync_presence()

    async def _sweep(self) -> None:
        args = [*self._log_args(), _SWEEP_PLAYERS, _SWEEP_INSTANCES]
        reply = await self._run("presence_sweep", self._presence_keys(self._instance_id), args)
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
            await self._drop_instance(dead, force=False)

    async def _presence_loop(self) -> None:
        next_beat = 0.0
        failures = 0
        while not self._stopping:
            await asyncio.sleep(self._sweep_interval)
            try:
                if time.monotonic() >= next_beat or self._presence_dirty:
                    await self._heartbeat()
                    next_beat = time.monotonic() + self._beat_interval
                await self._sweep()
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

    async def presence_enter(self, player_id: str) -> None:
        """One more connection here. Never raises for a Redis outage (re-synced later)."""
        pid = json.dumps(player_id)
        self._local[pid] = self._local.get(pid, 0) + 1
        await self._presence_change(pid, 1)

    async def presence_leave(self, player_id: str) -> None:
        """One connection fewer here. Never raises for a Redis outage (re-synced later)."""
        pid = json.dumps(player_id)
        count = self._local.get(pid, 0)
        if count <= 0:
            return
        if count == 1:
            del self._local[pid]
        else:
            self._local[pid] = count - 1
        await self._presence_change(pid, -1)

    async def presence_poll(self, player_id: str) -> None:
        args = [*self._log_args(), json.dumps(player_id), int(POLL_PRESENCE_SECONDS * 1000)]
        _status, message = await self._run(
            "presence_poll", self._presence_keys(self._instance_id), args
        )
        self._offer_message(message)

    async def online_count(self) -> int:
        return int(await self._cmd(self._redis.scard(self._k_presence[5])))

    async def is_online(self, player_id: str) -> bool:
        return bool(
            await self._cmd(self._redis.sismember(self._k_presence[5], json.dumps(player_id)))
        )

    # limits (PROTOCOL 3.6): see limits_redis.py ------------------------------------------------
    @functools.cached_property
    def _limits(self) -> RedisLimits:
        return RedisLimits(self._redis, self._prefix, self._instance_id, self._cmd)

    async def rate_limit(self, key: str, rate: int) -> RateDecision:
        return await self._limits.rate_limit(key, rate)

    async def stream_admit(self, subject: str, limit: int) -> bool:
        return await self._limits.admit(subject, limit)

    async def stream_release(self, subject: str) -> None:
        await self._limits.release(subject)
