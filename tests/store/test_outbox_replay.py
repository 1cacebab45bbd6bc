"""Redis losing its data must not replay what was already published.

The engine's guard against publishing an outbox row twice (`applied:<key>`) lives in Redis, so
it goes with everything else when Redis loses its data (FLUSHALL, a restart without AOF). The
rebuild then flushes the outbox into the new log: a row published just before the loss and
still in SQL would be published a second time, and watchers that were sent `stream:reset`
would see its events again. The guard that survives is SQL's: a row published is deleted at
once, by the step that published it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from quart import Quart

from quart_app.store.rebuild import rebuild

from ..helpers import Api, eventually, log_events, outbox_count, serving
from ..services import RedisServer

# Longer than the test: no relay pass and no epoch watcher runs on its own, so the loss
# lands inside the relay interval and the rebuild happens when the test says.
QUIET = 60.0


@pytest.fixture(name="two_instances")
async def _two_instances(
    make_app: Callable[..., Quart], own_redis: RedisServer
) -> AsyncIterator[tuple[Api, Api]]:
    settings = {"redis_url": own_redis.url, "outbox_interval": QUIET, "backfill_interval": QUIET}
    async with serving(make_app(**settings)) as a, serving(make_app(**settings)) as b:
        yield a, b


def _of_match(events: list[dict[str, object]], match_id: str) -> list[str]:
    return [
        str(e["event"])
        for e in events
        if f"match:{match_id}" in e["rooms"]  # type: ignore[operator]
    ]


async def test_rows_published_just_before_redis_lost_its_data_are_not_published_again(
    two_instances: tuple[Api, Api], own_redis: RedisServer
) -> None:
    a, b = two_instances
    await a.play("m1", "ann", "bob", "ann")  # published by its requests, on instance a
    assert _of_match(await log_events(a.rt.engine), "m1") == ["match:created", "match:result"]

    own_redis.cli("FLUSHALL")  # within the relay interval of those publications
    # The other instance notices first and rebuilds (its epoch watcher's step).
    await rebuild(b.rt.store, b.rt.engine, b.rt.relay)
    await a.play("m2", "ann", "bob", None)  # the new log goes on

    events = await log_events(b.rt.engine)
    assert _of_match(events, "m1") == [], "published before the loss, and again after it"
    assert _of_match(events, "m2") == ["match:created", "match:result"]
    assert await outbox_count(a.rt.store) == 0


async def test_a_row_committed_but_not_yet_published_at_the_loss_is_published_once(
    two_instances: tuple[Api, Api], own_redis: RedisServer
) -> None:
    """The other side of the guard: a row the loss caught before its publication (its
    instance crashed between commit and publish) still reaches the new log, once."""
    a, b = two_instances
    await a.create("m1", "ann", "bob")
    own_redis.stop()  # the result commits; its publication cannot happen
    try:
        reply = await a.post("/api/matches/m1/result", {"winner_id": "ann"})
        assert reply.status == 200, reply
    finally:
        own_redis.start()  # empty: the data is lost
    await rebuild(b.rt.store, b.rt.engine, b.rt.relay)
    await a.rt.relay.flush()  # the instance that wrote it tries again too: no duplicate

    # A connection pooled before the restart fails its first command (EngineUnavailable,
    # never retried inside redis-py): read as a client would, again until Redis answers.
    events: list[dict[str, Any]] = []

    async def read_log() -> bool:
        events[:] = await log_events(b.rt.engine)
        return True

    await eventually(read_log, 10, "a read of the new log")
    assert _of_match(events, "m1") == ["match:result"]
    assert await outbox_count(a.rt.store) == 0
