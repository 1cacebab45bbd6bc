"""A new stream's admission (PROTOCOL 3.6) and its presence change in one step
(`stream_admit_and_enter`): refused means no presence change; on the Redis engine, one round
trip for both (a reconnect storm pays one per stream, not two)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from quart_app.engine.redis import RedisEngine

from ..faults import FaultProxy
from .conftest import Collector, EngineFactory


def _presence(collector: Collector) -> list[tuple[str, object]]:
    return [
        (e.name, json.loads(e.text)["data"]["player_id"])
        for e in collector.events
        if "presence" in e.rooms
    ]


async def test_admitted_enters_presence_and_refused_changes_nothing(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine()
    collector = Collector(engine)
    assert await engine.stream_admit_and_enter("s:ann", 2, "ann")
    assert await engine.stream_admit_and_enter("s:ann", 2, "ann")  # a second tab
    assert not await engine.stream_admit_and_enter("s:ann", 2, "ann")  # over the limit
    await collector.flush(engine)
    assert _presence(collector) == [("player:online", "ann")]
    assert await engine.is_online("ann") and await engine.online_count() == 1
    # Two streams counted in presence, not three: two leaves take her offline.
    await engine.stream_release("s:ann")
    await engine.presence_leave("ann")
    assert await engine.is_online("ann")
    await engine.stream_release("s:ann")
    await engine.presence_leave("ann")
    await collector.flush(engine)
    assert _presence(collector) == [("player:online", "ann"), ("player:offline", "ann")]
    assert not await engine.is_online("ann")
    # A refused player who holds no stream anywhere never appears online.
    assert await engine.stream_admit("s:bob", 1)  # bob's one stream, without presence
    assert not await engine.stream_admit_and_enter("s:bob", 1, "bob")
    await collector.flush(engine)
    assert not await engine.is_online("bob") and len(_presence(collector)) == 2


@pytest.fixture(name="proxied_redis")
async def _proxied_redis(
    make_redis: Callable[..., Awaitable[RedisEngine]], redis_url: str
) -> AsyncIterator[tuple[RedisEngine, FaultProxy]]:
    """A Redis engine reaching the test's Redis through a FaultProxy, its first sync done."""
    port = urlsplit(redis_url).port
    assert port is not None
    proxy = FaultProxy(port).start()
    try:
        engine = await make_redis(redis_url.replace(f":{port}", f":{proxy.port}"))
        assert await engine.stream_admit_and_enter("s:warm", 100, "warm")
        yield engine, proxy
    finally:
        proxy.stop()


async def test_admission_and_presence_are_one_round_trip_on_redis(
    proxied_redis: tuple[RedisEngine, FaultProxy],
) -> None:
    engine, proxy = proxied_redis
    # Every chunk held 0.15 s each way: a round trip takes 0.3 s, two take 0.6 s.
    proxy.delay(0.15)
    started = time.monotonic()
    assert await engine.stream_admit_and_enter("s:ann", 100, "ann")
    elapsed = time.monotonic() - started
    proxy.pass_through()
    assert 0.25 < elapsed < 0.45, f"{elapsed:.2f} s: not one round trip"
    assert await engine.is_online("ann")


async def test_a_storm_of_admissions_shares_round_trips_and_connections_on_redis(
    proxied_redis: tuple[RedisEngine, FaultProxy],
) -> None:
    # 200 streams arriving together are admitted over one Redis connection of their own, not
    # one pooled connection each (a turn's admissions go in one batch: script_lane.py), and
    # every one of them is counted: a second stream each is refused at a limit of one.
    engine, proxy = proxied_redis
    before = proxy.connections
    first = await asyncio.gather(
        *(engine.stream_admit_and_enter(f"s:{i}", 1, f"p{i}") for i in range(200))
    )
    second = await asyncio.gather(
        *(engine.stream_admit_and_enter(f"s:{i}", 1, f"p{i}") for i in range(200))
    )
    assert all(first) and not any(second)
    assert proxy.connections - before <= 1, proxy.connections - before
    assert await engine.online_count() == 201
