"""The running parts of one instance, built from Settings and started/stopped with the app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from quart import current_app

from .auth import Authenticator
from .config import Settings
from .engine import create_engine
from .engine.base import Engine
from .engine.board_state import BoardIncomplete
from .engine.hub import Hub
from .metrics import LANE_REQUESTS, STREAM_PATHS, Metrics
from .services.leaderboard import LeaderboardService
from .services.matches import MatchService, PlayerService
from .store.database import Store
from .store.outbox import Relay
from .store.rebuild import rebuild

log = logging.getLogger(__name__)

# Start-up retries of an unreachable database: 0.5 s, doubling, at most 5 s apart.
DATABASE_RETRY_FIRST = 0.5
DATABASE_RETRY_MAX = 5.0
# How long start() waits for the first attempt before serving anyway (/healthz must answer).
DATABASE_FIRST_ATTEMPT_WAIT = 5.0
# Each step of stop() gets this long, and all of them this long together: with Redis or the
# database unreachable, a close that waits on the network must not hold the exit past
# DRAIN_SECONDS + 5 s (PROTOCOL 3.7).
STOP_STEP_SECONDS = 1.0
STOP_SECONDS = 2.0


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.database_url)
        self.engine: Engine = create_engine(
            settings.redis_url,
            prefix=settings.redis_prefix,
            event_log_size=settings.event_log_size,
            backfill_interval=settings.backfill_interval,
            presence_ttl_seconds=settings.presence_ttl_seconds,
            # memory engine: its board loads from SQL after start (reads use SQL meanwhile)
            board_pending=True,
        )
        self.hub = Hub(
            self.engine,
            queue_limit=settings.send_queue_max,
            queue_bytes=settings.send_queue_bytes,
            heartbeat_seconds=settings.heartbeat_seconds,
        )
        self.relay = Relay(self.store, self.engine, settings.outbox_interval)
        self.auth = Authenticator(settings)
        self.matches = MatchService(
            self.store, self.relay, self.engine, settings.elo_k, settings.initial_rating
        )
        self.players = PlayerService(self.store, self.relay)
        self.leaderboard = LeaderboardService(self.engine, self.store)
        self.hub.read_board_with(self.leaderboard.board_page)
        self.hub.windows.read_with(self.leaderboard)
        self._watch: asyncio.Task[None] | None = None
        self._board_load: asyncio.Task[None] | None = None
        self._database_up: asyncio.Task[None] | None = None
        self.metrics = self._metrics()

    def _metrics(self) -> Metrics:
        hub, metrics = self.hub, Metrics()
        metrics.gauge(
            "rankpulse_connections",
            "open SSE, WebSocket and long-poll connections",
            lambda: len(hub.connections),
        )
        metrics.gauge(
            "rankpulse_rooms", "rooms with at least one connection here", lambda: len(hub.rooms)
        )
        metrics.gauge(
            "rankpulse_asyncio_tasks",
            "asyncio tasks alive in this instance (a leak shows as growth over a soak)",
            lambda: len(asyncio.all_tasks()),
        )
        metrics.gauge(
            "rankpulse_log_head",
            "sequence number of the newest event fanned out",
            lambda: hub.head_seq,
        )
        metrics.counter(
            "rankpulse_events_total", "events fanned out by this instance", lambda: hub.events
        )
        metrics.counter(
            "rankpulse_deliveries_total", "events queued to connections", lambda: hub.deliveries
        )
        metrics.counter(
            "rankpulse_slow_disconnects_total",
            "connections ended for not keeping up",
            lambda: hub.slow_closed,
        )
        metrics.gauge(
            "rankpulse_last_flush_seconds",
            "time the last write of pending events to all sockets took",
            lambda: hub.last_flush_seconds,
        )
        metrics.counter(
            "rankpulse_conflated_snapshots_total",
            "board state of lagging connections replaced by one conflated snapshot",
            lambda: hub.conflated,
        )
        windows = hub.windows
        metrics.counter(
            "rankpulse_window_reads_total",
            "rank windows read again because a change touched them (once per instance)",
            lambda: windows.reads,
        )
        metrics.counter(
            "rankpulse_windows_sent_total",
            "leaderboard:window events encoded and pushed to a window room",
            lambda: windows.sent,
        )
        hub.observe_flush = metrics.observe_flush
        relay = self.relay
        metrics.counter(
            "rankpulse_outbox_publish_failures_total",
            "outbox rows the engine refused (an error other than unreachable); each is retried",
            lambda: relay.publish_failures,
        )
        metrics.gauge(
            "rankpulse_outbox_refused_rows",
            "outbox rows refused by the engine, waiting for their next retry",
            lambda: relay.refused_rows,
        )

        def streams_on(path: str) -> Callable[[], list[tuple[tuple[str], float]]]:
            return lambda: [((t,), float(STREAM_PATHS[(t, path)])) for t in ("sse", "ws")]

        metrics.labelled_counter(
            "rankpulse_stream_fast_path_total",
            "streams written straight to the socket, by transport",
            ["transport"],
            streams_on("fast"),
        )
        metrics.labelled_counter(
            "rankpulse_fast_lane_requests_total",
            "GETs of /api/poll and /api/events served past Hypercorn's request parsing, by path",
            ["path"],
            lambda: [((path,), float(count)) for path, count in LANE_REQUESTS.items()],
        )
        metrics.labelled_counter(
            "rankpulse_stream_fallback_path_total",
            "streams that fell back to the slow ASGI send path (about 20x slower), by transport",
            ["transport"],
            streams_on("fallback"),
        )
        return metrics

    async def start(self) -> None:
        """Start serving even when a dependency is down: the Redis engine retries by itself;
        the database is tried in the background with a capped backoff. A healthy start is
        ready when this returns (it waits for the first attempt, briefly); otherwise /readyz
        says 503 meanwhile, and requests that need the database answer 503 with Retry-After
        (DatabaseUnavailable)."""
        await self.engine.start()
        await self.hub.start()
        self._epoch = self.engine.epoch
        first_attempt = asyncio.Event()
        self._database_up = asyncio.create_task(self._connect_database(first_attempt))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DATABASE_FIRST_ATTEMPT_WAIT):
                await first_attempt.wait()

    async def _connect_database(self, first_attempt: asyncio.Event) -> None:
        delay, attempt = DATABASE_RETRY_FIRST, 1
        while not await self._start_on_database(attempt):
            first_attempt.set()
            # Jitter: instances that lost the database together do not knock together.
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            attempt += 1
            delay = min(delay * 2, DATABASE_RETRY_MAX)
        first_attempt.set()

    async def _start_on_database(self, attempt: int) -> bool:
        try:
            await self.store.connect(migrate=self.settings.migrate_on_start)
        except Exception as exc:  # noqa: BLE001 - any failure here is retried, and logged
            log.warning(
                "database not reachable at start (attempt %d): %s: %s",
                attempt,
                type(exc).__name__,
                str(exc).strip() or "no detail",
            )
            return False
        if attempt > 1:
            log.warning("database reachable after %d attempts", attempt)
        if self.settings.redis_url is None:
            # The memory engine serves board reads from SQL and holds results until its
            # board is loaded: ready at once, even at 1,000,000 players (issue 8). A Redis
            # engine rebuilds here; /readyz may say 200 before it ends (start() waits at most
            # DATABASE_FIRST_ATTEMPT_WAIT), reads use SQL until the board is whole.
            self._board_load = asyncio.create_task(self._rebuild_if_empty())
        else:
            await self._rebuild_if_empty()
        await self.relay.start()
        self._watch = asyncio.create_task(self._watch_epoch())
        return True

    async def board_loaded(self) -> None:
        """Returns once the board the instance started with is whole (the memory engine loads
        it in the background; a Redis engine before it is ready)."""
        if self._board_load is not None:
            await asyncio.shield(self._board_load)

    @property
    def draining(self) -> bool:
        return self.hub.draining

    async def drain(self) -> None:
        """PROTOCOL 3.7 (SIGTERM): /readyz and new streams answer 503 from now on; open
        streams end spread over DRAIN_SECONDS. Needs neither Redis nor the database."""
        log.warning(
            "draining: ending %d connections over %g s",
            len(self.hub.connections),
            self.settings.drain_seconds,
        )
        await self.hub.drain(self.settings.drain_seconds)
        log.info("drained: stopping")

    async def stop(self) -> None:
        if self._database_up:
            self._database_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._database_up
        for task in (self._watch, self._board_load):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        started = time.monotonic()
        steps = (self.matches.close, self.relay.stop, self.hub.stop, self.engine.stop)
        for step in (*steps, self.store.disconnect):
            budget = min(STOP_STEP_SECONDS, started + STOP_SECONDS - time.monotonic())
            try:
                async with asyncio.timeout(max(budget, 0.05)):
                    await step()
            except TimeoutError:
                log.warning(
                    "stop: %s gave up after %.2f s (a dependency unreachable?)",
                    step.__qualname__,
                    budget,
                )
            except Exception:  # noqa: BLE001 - stopping goes on: the process is exiting
                log.warning("stop: %s failed", step.__qualname__, exc_info=True)
        log.info("stopped in %.2f s", time.monotonic() - started)

    async def _rebuild_if_empty(self) -> None:
        # The memory engine starts empty in every process, and a Redis may have lost its
        # data: in both cases the board comes back from SQL, the truth.
        # A board not marked complete (BoardIncomplete: a Redis that lost its data, or one
        # filled by a version without the marker) is rebuilt too; reads use SQL meanwhile.
        try:
            count = await self._rebuild_while(self._board_empty)
            if count:
                log.info("board rebuilt from SQL: %d players", count)
        except Exception:  # noqa: BLE001 - Redis down at start: the watcher retries
            log.warning("could not check the board at start; will retry", exc_info=True)
            self._epoch = ""

    async def _watch_epoch(self) -> None:
        """A new epoch means the engine lost its data (Redis restarted empty): the board comes
        back from SQL. Every instance watches; the first to find the board incomplete rebuilds
        it and the others wait for that rebuild, so watchers get one fresh board, not one per
        instance."""
        while True:
            await asyncio.sleep(self.settings.backfill_interval)
            if self.engine.epoch != self._epoch:
                epoch = self.engine.epoch
                try:
                    count = await self._rebuild_while(self._board_incomplete)
                except Exception:  # noqa: BLE001 - the engine may still be down: next turn
                    log.warning(
                        "board rebuild after an engine restart failed; retrying", exc_info=True
                    )
                    continue
                self._epoch = epoch
                if count is not None:
                    log.warning("engine lost its data; board rebuilt from SQL: %d players", count)

    async def _rebuild_while(self, missing: Callable[[], Awaitable[bool]]) -> int | None:
        """Rebuild the board from SQL while `missing()` says so; the players rebuilt, or None
        when the board was there (or another instance rebuilt it). An automatic rebuild never
        takes over one that runs (it waits for it, then looks again): at 1,000,000 players a
        rebuild takes 20 s, and instances starting together used to supersede each other's
        for minutes."""
        while await missing():
            count = await rebuild(self.store, self.engine, self.relay, take_over=False)
            if count is not None:
                return count
            await asyncio.sleep(self.settings.backfill_interval)
        return None

    async def _board_empty(self) -> bool:
        try:
            _, total = await self.engine.board_page(0, 0)
        except BoardIncomplete:
            return True
        return total == 0

    async def _board_incomplete(self) -> bool:
        try:
            await self.engine.board_page(0, 0)
        except BoardIncomplete:
            return True
        return False


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["pulse"]
    return rt
