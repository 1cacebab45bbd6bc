"""The outbox relay: events of committed changes reach the engine even across a crash or a
Redis outage.

The request that committed a change publishes it at once (so its events normally go out
before the answer). Rows it could not publish, or whose instance died first, are published by
the relay loop that runs in every instance; the engine ignores a key it has already applied,
so a row published twice is harmless. A row is deleted as soon as it is published, so that
Redis losing its data (and with it that guard) cannot make the rebuild publish it again.

A row the engine refuses (Redis answers but errs: OOM under `noeviction`, a script error, a row
it cannot encode) is logged, counted, and retried with its own exponential backoff; the rows
behind it go on, except those that share a match or a player with it, which wait behind it so
that the events of one match (and one player's own feed) keep their commit order. Redis not
answering at all is another matter: then nothing can go out, and the pass just stops until
the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from databases.core import Connection

from ..domain.publication import Publication
from ..engine.base import Engine, EngineUnavailable
from .database import Store
from .published_rows import published_rows
from .tables import outbox

log = logging.getLogger(__name__)

# A row younger than this is left to the request that wrote it.
_GRACE_SECONDS = 1.0
_PUBLISH_TIMEOUT = 1.0
_BATCH = 200
# Backoff of a refused row: the first retry after _RETRY_BASE s, doubling up to _RETRY_CAP.
_RETRY_BASE = 0.5
_RETRY_CAP = 30.0


def new_key() -> str:
    return uuid.uuid4().hex


async def add(conn: Connection, publication: Publication) -> None:
    """Record the publication inside the caller's transaction."""
    await conn.execute(
        outbox.insert().values(
            key=publication.key, payload=publication.to_json(), created_at=time.time()
        )
    )


@dataclass(slots=True)
class _Refused:
    """A row the engine refused: how often, and when it may be tried again."""

    attempts: int
    retry_at: float
    since: float
    scopes: frozenset[str]  # (empty for a row that cannot be read)


def ordering_scopes(publication: Publication) -> set[str]:
    """What a row must stay in order with: its match and player rooms (and the players of its
    board rows). Broad rooms (`matches`, `leaderboard:global`) are left out on purpose: they
    would chain every row to every other, and their readers take the board's versions."""
    scopes = {
        room
        for draft in publication.events
        for room in draft.rooms
        if room.startswith(("match:", "player:"))
    }
    scopes.update(f"player:{entry.player_id}" for entry in publication.board)
    return scopes


class Relay:
    def __init__(self, store: Store, engine: Engine, interval: float) -> None:
        self.store = store
        self.engine = engine
        self.interval = interval
        self.retry_base = _RETRY_BASE
        self.retry_cap = _RETRY_CAP
        # Counters for /metrics.
        self.publish_failures = 0
        self._refused: dict[str, _Refused] = {}
        # Scopes of the rows the last relay pass left waiting behind a refused row.
        self._held: set[str] = set()
        self._published: set[str] = set()
        self._rows = published_rows(store)
        self._task: asyncio.Task[None] | None = None

    @property
    def refused_rows(self) -> int:
        """Rows the engine refused and that wait for their next retry."""
        return len(self._refused)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._forget_published()
        with contextlib.suppress(Exception):
            await self._rows.close()

    async def publish(self, publication: Publication, *, delete_row: bool = True) -> bool:
        """Try to publish now (and then delete its row, unless the caller deletes it: see
        delete_later); False leaves the row to the relay loop.

        Called right after a commit: it never raises (but for cancellation), because the
        change is durable and its answer must be a 2xx whatever the engine says. A row that
        shares a match or player with a refused row is left to the relay too, which
        publishes it after that row (see ordering_scopes).
        """
        if self._refused:
            waiting_for = {scope for r in self._refused.values() for scope in r.scopes}
            if ordering_scopes(publication) & (waiting_for | self._held):
                return False
        return await self._attempt(publication, delete_row)

    async def publish_many(self, publications: Sequence[Publication]) -> list[bool]:
        """`publish(..., delete_row=False)` of each, in commit order, in as few engine round
        trips as that order allows: publications go out in runs that share no ordering scope
        (a refused one then has nothing of its match or players behind it in its run; the
        next run sees it refused, as `publish` would). Once the engine does not answer, the
        rest is left to the relay. Never raises (but for cancellation)."""
        published = [False] * len(publications)
        run: list[int] = []
        run_scopes: set[str] = set()
        held: set[str] = set()
        answering = True
        for index, publication in enumerate(publications):
            scopes = ordering_scopes(publication)
            if scopes & run_scopes:
                answering = await self._publish_run(publications, run, published)
                run, run_scopes = [], set()
                if not answering:
                    break
            waiting_for = {scope for r in self._refused.values() for scope in r.scopes}
            if scopes & (waiting_for | self._held | held):
                held |= scopes  # what shares a scope with it waits for the relay too
                continue
            run.append(index)
            run_scopes |= scopes
        if run and answering:
            await self._publish_run(publications, run, published)
        return published

    async def _publish_run(
        self, publications: Sequence[Publication], run: list[int], published: list[bool]
    ) -> bool:
        """One round trip of publications; False when the engine did not answer."""
        try:
            # Twice one publication's: a pipeline is two round trips (redis-py checks its
            # scripts are loaded first), and one group's answers wait for it once.
            async with asyncio.timeout(2 * _PUBLISH_TIMEOUT):
                replies = await self.engine.publish_many([publications[i] for i in run])
        except (EngineUnavailable, TimeoutError):
            log.warning("engine unavailable; %d outbox rows left to the relay", len(run))
            return False
        except Exception:  # noqa: BLE001 - e.g. a row that cannot be encoded: one at a time
            for i in run:
                published[i] = await self._attempt(publications[i], delete_row=False)
            return True
        for i, reply in zip(run, replies, strict=True):
            key = publications[i].key
            assert key is not None
            if isinstance(reply, Exception):
                log.warning("the engine refused outbox row %s: %r", key, reply)
                self._refuse(key, frozenset(ordering_scopes(publications[i])))
            else:
                self._refused.pop(key, None)
                published[i] = True
        return True

    def delete_later(self, keys: list[str]) -> None:
        """Published rows a caller could not delete itself: the next pass deletes them."""
        self._published.update(keys)

    async def _attempt(self, publication: Publication, delete_row: bool = True) -> bool:
        assert publication.key is not None
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT):
                await self.engine.publish(publication)
        except (EngineUnavailable, TimeoutError):
            log.warning("engine unavailable; outbox row %s left to the relay", publication.key)
            return False
        except Exception:  # noqa: BLE001 - the commit stands; the row is retried later
            self._refuse(publication.key, frozenset(ordering_scopes(publication)))
            return False
        self._refused.pop(publication.key, None)
        if delete_row:
            with contextlib.suppress(Exception):  # the commit stands, and the publication
                await self._mark_published(publication.key)
        return True

    async def _mark_published(self, key: str) -> None:
        """Delete the row now, in the step that published it. The engine's own guard against
        a second publication lives in Redis and is lost with Redis' data; a row left in SQL
        until the next pass would then be published again by the rebuild's flush, and clients
        already sent `stream:reset` would see its events twice. SQL's guard survives."""
        try:
            await self._rows.delete(key)
        except BaseException:
            # The database is away: the next pass deletes it (the engine's guard holds until
            # then, unless Redis loses its data in that very moment).
            self._published.add(key)
            raise

    async def flush(self) -> int:
        """Publish every pending row now (refused rows too, backoff or not); returns how many
        are still pending."""
        await self._forget_published()
        return await self._publish_pending(grace=0.0, force=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._forget_published()
                await self._publish_pending(grace=_GRACE_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("outbox relay pass failed; retrying")

    def _refuse(self, key: str, scopes: frozenset[str]) -> None:
        self.publish_failures += 1
        previous = self._refused.get(key)
        attempts = previous.attempts + 1 if previous else 1
        delay = min(self.retry_cap, self.retry_base * 2 ** (attempts - 1))
        now = time.monotonic()
        since = previous.since if previous else now
        self._refused[key] = _Refused(attempts, now + delay, since, scopes)
        log.exception(
            "the engine refused outbox row %s (attempt %d); retrying in %.1f s",
            key,
            attempts,
            delay,
        )

    async def _forget_published(self) -> None:
        # Deleting in batches here, not per request, saves a write transaction per change.
        if not self._published:
            return
        keys, self._published = list(self._published), set()
        try:
            await self.store.db.execute(outbox.delete().where(outbox.c.key.in_(keys)))
        except BaseException:
            self._published.update(keys)
            raise

    async def _publish_pending(self, grace: float, force: bool = False) -> int:
        rows: list[Any] = await self.store.db.fetch_all(
            sa.select(outbox.c.key, outbox.c.payload)
            .where(outbox.c.created_at <= time.time() - grace)
            .order_by(outbox.c.id)
            .limit(_BATCH)
        )
        pending = 0
        held: set[str] = set()  # scopes of rows left behind in this pass
        now = time.monotonic()
        for index, row in enumerate(rows):
            refused = self._refused.get(row.key)
            waiting = refused is not None and refused.retry_at > now and not force
            try:
                publication = Publication.from_json(row.payload)
            except Exception:  # noqa: BLE001 - an unreadable row must not stop the others
                if not waiting:
                    self._refuse(row.key, frozenset())
                pending += 1
                continue
            scopes = ordering_scopes(publication)
            if waiting or scopes & held:
                held |= scopes
                pending += 1
                continue
            failures = self.publish_failures
            if not await self._attempt(publication):
                if self.publish_failures == failures:
                    # Not a refusal: the engine does not answer, so no later row can go out.
                    pending += len(rows) - index
                    break
                held |= scopes
                pending += 1
        self._held = held
        if len(rows) < _BATCH:
            self._forget_rows_gone({row.key for row in rows}, grace)
        await self._forget_published()
        return pending

    def _forget_rows_gone(self, seen: set[str], grace: float) -> None:
        # A refused row that another instance published (and deleted), or an operator
        # deleted, leaves no trace here. (A row younger than the grace is not in `seen`.)
        old = time.monotonic() - grace - 1.0
        for key in [key for key, refused in self._refused.items() if refused.since < old]:
            if key not in seen:
                del self._refused[key]
