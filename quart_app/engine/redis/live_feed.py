"""Live delivery of the log to this instance's listeners: the bus subscriber, the gate, the
catch-up from the log and the liveness probe.

Every event reaches the listeners through one synchronous gate, `offer`, which delivers a batch
only when it continues exactly after the last delivered seq of the current epoch (dropping what
was delivered already). Three sources feed it:

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
a dead subscription, which is then reopened. The subscriber itself judges, and only from two
reads in a row that waited their whole timeout and heard nothing: a loop kept busy (a storm of
new streams) leaves an echo waiting in the socket, and one read cut short by its timer proves
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from redis.exceptions import TimeoutError as RedisTimeoutError

from ..base import Event
from .connection import COMMAND_TIMEOUT, RedisConnection, bounded
from .log import RedisLog, parse_message

log = logging.getLogger(__name__)

_CATCH_UP_BATCH = 1000
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0  # reconnect: at once, then 0.05 s doubling to 1 s
_PROBE = "~"  # bus messages starting with this are liveness probes, not events
BUS_READ = 1.0  # seconds one read of the bus waits before it returns with nothing


def probe_idle_seconds(backfill_interval: float) -> float:
    """How long the bus may be quiet before a probe checks it."""
    return max(1.0, 3 * backfill_interval)


class LiveFeed:
    """See the module docstring. `deliver` hands a batch to the listeners; `stopping` tells
    the loops to end (should a cancellation get lost)."""

    def __init__(
        self,
        connection: RedisConnection,
        event_log: RedisLog,
        channel: str,
        instance_id: str,
        deliver: Callable[[list[Event]], None],
        stopping: Callable[[], bool],
        *,
        backfill_interval: float,
    ) -> None:
        self._connection = connection
        self._log = event_log
        self._channel = channel
        self._instance_id = instance_id
        self._deliver = deliver
        self._stopping = stopping
        self._backfill_interval = float(backfill_interval)
        self._probe_idle = probe_idle_seconds(self._backfill_interval)
        self._probe_timeout = max(1.0, 2 * self._backfill_interval)

        self.live_epoch: str | None = None
        self._last_seq = 0
        self._bus_max_seq = 0
        self._wake: asyncio.Event | None = None
        self.subscribed: asyncio.Event | None = None
        self._reconnect_bus = False
        self._last_bus_rx = 0.0
        self._probe_token: str | None = None
        self._probe_sent = 0.0
        self._quiet_overdue = False  # the last read: full length, nothing, the probe overdue
        self.probes_echoed = 0  # (counted for the tests and operators)
        self.probe_resubscribes = 0

    def prepare(self) -> None:
        """Before the tasks start (the events belong to the running loop)."""
        self._wake = asyncio.Event()
        self.subscribed = asyncio.Event()

    def go_live(self, epoch: str, head: int) -> None:
        """Deliver what comes after `head` of `epoch` (the head read at start)."""
        self.live_epoch, self._last_seq = epoch, head

    # the gate ---------------------------------------------------------------------------------
    def offer(self, epoch: str, events: list[Event]) -> bool:
        """The one gate to the listeners (see the module docstring). False when the events do
        not continue the delivered stream (a gap, another epoch): the caller then lets the bus
        or the catch-up task bring them."""
        if not events:
            return True
        if epoch != self.live_epoch:
            return False
        skip = self._last_seq + 1 - events[0].seq
        if skip < 0:
            return False
        if skip >= len(events):
            return True
        batch = events[skip:] if skip else events
        self._last_seq = batch[-1].seq
        self._log.saw_delivered(epoch, self._last_seq)
        try:
            self._deliver(batch)
        except Exception:  # noqa: BLE001 - a failing listener must not stop the others' feed
            log.exception("an event listener failed")
        return True

    def offer_message(self, message: str) -> None:
        """A bus message returned by one of this instance's scripts."""
        if message:
            epoch, events = parse_message(message)
            self._log.saw_epoch(epoch, events[-1].seq if events else 0)
            self.offer(epoch, events)

    # the bus ----------------------------------------------------------------------------------
    async def bus_loop(self) -> None:
        assert self._wake is not None and self.subscribed is not None
        backoff = 0.0
        while not self._stopping():
            subscription = self._connection.subscription(self._channel)
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    await subscription.subscribe()
                # Wait for the confirmation: from here on nothing published is missed by the
                # subscription, so the catch-up below closes the gap behind it.
                deadline = time.monotonic() + 5.0
                while True:
                    message = await subscription.next_message(timeout=1.0)
                    if message is not None and message[0] == "subscribed":
                        break
                    if time.monotonic() > deadline:
                        raise RedisTimeoutError("no subscribe confirmation")
                self._reconnect_bus = False
                self._probe_token = None
                self._quiet_overdue = False
                self._last_bus_rx = time.monotonic()
                self.subscribed.set()
                self._wake.set()
                backoff = 0.0
                while not self._reconnect_bus:
                    started = time.monotonic()
                    message = await subscription.next_message(timeout=BUS_READ)
                    if message is None:
                        self._heard_nothing(time.monotonic() - started)
                    elif message[0] == "message":
                        self._on_bus(message[1])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - survive anything, reconnect
                log.warning(
                    "event bus subscription lost (%s: %s); reconnecting", type(exc).__name__, exc
                )
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await subscription.close()
            if self._reconnect_bus:
                self.probe_resubscribes += 1
                log.warning("event bus probe not echoed; resubscribing")
                self._reconnect_bus = False
            await asyncio.sleep(backoff)
            backoff = min(max(backoff * 2, BACKOFF_MIN), BACKOFF_MAX)

    def _on_bus(self, data: str) -> None:
        assert self._wake is not None
        self._last_bus_rx = time.monotonic()
        if data == self._probe_token:
            self.probes_echoed += 1
        self._probe_token = None  # any message proves the subscription alive
        self._quiet_overdue = False
        if data.startswith(_PROBE):
            return
        epoch, first, count, _rest = data.split("\n", 3)
        last = int(first) + int(count) - 1
        if epoch == self.live_epoch and last <= self._last_seq:
            return  # delivered already (this instance's own publication, typically)
        if epoch != self.live_epoch:
            self._wake.set()  # a new epoch (or a stale message): the catch-up task decides
            return
        self._bus_max_seq = max(self._bus_max_seq, last)
        if not self.offer(*parse_message(data)):
            self._wake.set()  # messages were lost: backfill from the log

    def _heard_nothing(self, waited: float) -> None:
        """A read of the bus returned nothing after `waited` seconds. Even one that waited its
        whole timeout proves nothing alone: a loop blocked while the echo arrived runs the
        read's timer before it reads the socket, on time or late. But by the time that read
        returns, the same turn of the loop has read the socket, so what had arrived is
        buffered and the next read returns it at once. So a probe still overdue at a second
        full-length quiet read in a row is lost, and so is the subscription."""
        if waited < BUS_READ - 0.01:
            return  # (another reply, a health check's PONG: nothing learnt)
        overdue = (
            self._probe_token is not None
            and time.monotonic() - self._probe_sent > self._probe_timeout
        )
        if overdue and self._quiet_overdue:
            self._reconnect_bus = True
        self._quiet_overdue = overdue

    # catch-up ---------------------------------------------------------------------------------
    async def catch_up_loop(self) -> None:
        assert self._wake is not None
        failures = 0
        while not self._stopping():
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
                await asyncio.sleep(min(BACKOFF_MAX, BACKOFF_MIN * 2**failures))

    async def _catch_up(self) -> None:
        """Deliver what the log holds past the last delivered seq; notice a new epoch."""
        for _ in range(10_000):
            if self.live_epoch is None:
                # First contact (Redis was down at start): go live from the head.
                epoch, head, *_ = await self._log.read(None, 0)
                self.live_epoch, self._last_seq, self._bus_max_seq = epoch, head, 0
                return
            epoch, head, status, first, events = await self._log.read(
                self._last_seq, _CATCH_UP_BATCH
            )
            if epoch != self.live_epoch:
                log.warning("new event log epoch %s: delivering it from the start", epoch)
                self.live_epoch, self._last_seq, self._bus_max_seq = epoch, 0, 0
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
            self.offer(epoch, events)
            if self._last_seq >= max(head, self._bus_max_seq):
                return

    async def _probe(self) -> None:
        """End-to-end check of the subscription while the bus is quiet."""
        if self.subscribed is None or not self.subscribed.is_set():
            return
        if self._probe_token is not None:
            return  # one at a time; the subscriber judges it (`_heard_nothing`)
        if time.monotonic() - self._last_bus_rx > self._probe_idle:
            token = _PROBE + self._instance_id
            # Set before the publish (its echo can be read before the publish returns); its
            # deadline counts from the publish's answer.
            self._probe_token, self._probe_sent = token, math.inf
            try:
                await bounded(self._connection.publish(self._channel, token))
            except BaseException:
                if self._probe_token == token:
                    self._probe_token = None  # (maybe never sent: nothing to wait for)
                raise
            if self._probe_token == token:
                self._probe_sent = time.monotonic()
