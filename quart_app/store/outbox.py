"""The outbox relay: events of committed changes reach the engine even across a crash or a
Redis outage.

The request that committed a change publishes it at once (so its events normally go out
before the answer). Rows it could not publish, or whose instance died first, are published by
the relay loop that runs in every instance; the engine ignores a key it has already applied,
so a row published twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import sqlalchemy as sa
from databases.core import Connection

from ..engine.base import Engine, EngineUnavailable, Publication
from .database import Store
from .tables import outbox

log = logging.getLogger(__name__)

# A row younger than this is left to the request that wrote it.
_GRACE_SECONDS = 1.0
_PUBLISH_TIMEOUT = 1.0
_BATCH = 200


def new_key() -> str:
    return uuid.uuid4().hex


async def add(conn: Connection, publication: Publication) -> None:
    """Record the publication inside the caller's transaction."""
    await conn.execute(
        outbox.insert().values(
            key=publication.key, payload=publication.to_json(), created_at=time.time()
        )
    )


class Relay:
    def __init__(self, store: Store, engine: Engine, interval: float) -> None:
        self.store = store
        self.engine = engine
        self.interval = interval
        self._published: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._forget_published()

    async def publish(self, publication: Publication) -> bool:
        """Try to publish now; False leaves the row to the relay loop."""
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT):
                await self.engine.publish(publication)
        except (EngineUnavailable, TimeoutError):
            log.warning("engine unavailable; outbox row %s left to the relay", publication.key)
            return False
        assert publication.key is not None
        self._published.add(publication.key)
        return True

    async def flush(self) -> int:
        """Publish every pending row now; returns how many are still pending."""
        await self._forget_published()
        return await self._publish_pending(grace=0.0)

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

    async def _publish_pending(self, grace: float) -> int:
        rows: list[Any] = await self.store.db.fetch_all(
            sa.select(outbox.c.payload)
            .where(outbox.c.created_at <= time.time() - grace)
            .order_by(outbox.c.id)
            .limit(_BATCH)
        )
        pending = 0
        for row in rows:
            if not await self.publish(Publication.from_json(row.payload)):
                pending += 1
                break
        await self._forget_published()
        return pending
