"""The limits of PROTOCOL 3.6 at the engine: GCRA rate limits and open streams per subject,
on both engines (Redis: shared by instances, and freed when an instance dies)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from quart_app.engine.base import Engine
from quart_app.engine.rate_limit import gcra
from quart_app.engine.redis import RedisEngine

from .conftest import EngineFactory


def test_gcra_allows_a_burst_of_rate_then_one_per_interval() -> None:
    tat, now = 0.0, 1_000_000.0
    remaining = []
    for _ in range(10):
        decision, tat = gcra(tat, now, 10)
        assert decision.allowed
        remaining.append(decision.remaining)
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    refused, same = gcra(tat, now, 10)
    assert not refused.allowed and same == tat
    assert refused.retry_after_ms == 100.0 and refused.retry_after_seconds == 1
    # one interval later, exactly one more
    decision, tat = gcra(tat, now + 100, 10)
    assert decision.allowed and decision.remaining == 0
    assert not gcra(tat, now + 100, 10)[0].allowed
    # a full window later, the whole burst again
    assert gcra(tat, now + 1100, 10)[0].remaining == 9


async def test_rate_limit_burst_then_refused(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    decisions = [await engine.rate_limit("writes:s:ann", 20) for _ in range(25)]
    allowed = [d.allowed for d in decisions]
    # 20 at once (a slow machine may refill one or two meanwhile), then refusals
    assert allowed[:20] == [True] * 20
    assert not all(allowed[20:])
    refused = next(d for d in decisions if not d.allowed)
    assert refused.remaining == 0 and 1 <= refused.retry_after_seconds
    assert 0 < refused.retry_after_ms <= 1000
    # another key has its own quota
    assert (await engine.rate_limit("writes:s:bob", 20)).remaining == 19


async def test_rate_limit_refill_after_the_hinted_wait(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    while (decision := await engine.rate_limit("k", 50)).allowed:
        pass
    await asyncio.sleep(decision.retry_after_ms / 1000 + 0.05)  # the wait it asked for
    assert (await engine.rate_limit("k", 50)).allowed


async def test_stream_admit_counts_up_to_the_limit(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    assert [await engine.stream_admit("s:ann", 3) for _ in range(4)] == [True] * 3 + [False]
    assert await engine.stream_admit("s:bob", 3)
    await engine.stream_release("s:ann")
    assert await engine.stream_admit("s:ann", 3)
    assert not await engine.stream_admit("s:ann", 3)


async def test_stream_limit_is_cluster_wide(
    make_redis: Callable[..., Awaitable[RedisEngine]],
) -> None:
    a, b = await make_redis(), await make_redis()
    assert await a.stream_admit("s:ann", 2)
    assert await a.stream_admit("s:ann", 2)
    assert not await b.stream_admit("s:ann", 2)  # at the limit on A: refused on B
    await a.stream_release("s:ann")
    assert await b.stream_admit("s:ann", 2)  # one closed on A: admitted on B
    assert not await a.stream_admit("s:ann", 2)


async def test_a_thousand_streams_closing_at_once_are_released_together(
    make_redis: Callable[..., Awaitable[RedisEngine]],
) -> None:
    """A network blip or a drain ends thousands of streams in one moment: their releases go
    to Redis in a few batches (not one pooled round trip each), and every count is right."""
    a, b = await make_redis(), await make_redis()
    subjects = [f"s:p{i % 250}" for i in range(1000)]  # 4 streams each
    assert all(await asyncio.gather(*(a.stream_admit(s, 4) for s in subjects)))
    assert not await b.stream_admit("s:p7", 4)  # at the limit, seen from the other instance
    release_lane = a._limits._release
    before = release_lane.batches
    await asyncio.gather(*(a.stream_release(s) for s in subjects))
    assert release_lane.batches - before <= 5, release_lane.batches - before
    assert all(await asyncio.gather(*(b.stream_admit(s, 4) for s in set(subjects))))


async def test_streams_ending_after_the_engine_stopped_are_not_sent_to_redis(
    make_redis: Callable[..., Awaitable[RedisEngine]],
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A drain's last streams end while the instance stops: their counts lapse with the
    instance's presence. Releasing them must not log a warning each (hundreds in a drain), nor
    write the instance's counts back to Redis after it left."""
    a = await make_redis()
    assert all([await a.stream_admit("s:ann", 10) for _ in range(3)])
    key = f"lrp:limits:instance:{a.instance_id}"  # (the default prefix)
    client = aioredis.from_url(redis_url)
    try:
        await a.stop()
        left = await client.hgetall(key)
        caplog.clear()
        for _ in range(3):
            await a.stream_release("s:ann")
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert await client.hgetall(key) == left
    finally:
        await client.aclose()


async def test_crashed_instance_frees_its_streams_within_the_ttl(
    make_redis: Callable[..., Awaitable[RedisEngine]],
) -> None:
    ttl = 3.0
    a, b = await make_redis(presence_ttl_seconds=ttl), await make_redis(presence_ttl_seconds=ttl)
    assert await a.stream_admit("s:ann", 1)
    assert not await b.stream_admit("s:ann", 1)
    await _crash(a)
    started = time.monotonic()
    while not await b.stream_admit("s:ann", 1):
        assert time.monotonic() - started < ttl, "the crashed instance's stream still counts"
        await asyncio.sleep(0.1)


async def test_lost_counts_are_resynced(
    make_redis: Callable[..., Awaitable[RedisEngine]], redis_url: str
) -> None:
    a, b = await make_redis(), await make_redis()
    assert await a.stream_admit("s:ann", 2)
    # Redis loses A's counts (as after a data loss); A's next admission restores them first
    await a._redis.delete(f"lrp:limits:instance:{a.instance_id}")
    assert await a.stream_admit("s:ann", 2)
    assert not await b.stream_admit("s:ann", 2)


async def _crash(engine: Engine) -> None:
    """Stop the engine's tasks without its graceful stop (no presence removal)."""
    assert isinstance(engine, RedisEngine)
    engine._stopping = True
    for task in engine._tasks:
        task.cancel()
    await asyncio.gather(*engine._tasks, return_exceptions=True)
    engine._tasks = []


async def test_concurrent_admissions_on_two_instances_never_exceed_the_limit(
    make_redis: Callable[..., Awaitable[RedisEngine]],
) -> None:
    a, b = await make_redis(), await make_redis()
    verdicts = await asyncio.gather(
        *(engine.stream_admit("s:ann", 5) for _ in range(20) for engine in (a, b))
    )
    assert verdicts.count(True) == 5


async def test_rate_limit_is_shared_by_instances(
    make_redis: Callable[..., Awaitable[RedisEngine]],
) -> None:
    a, b = await make_redis(), await make_redis()
    while (await a.rate_limit("writes:s:ann", 10)).allowed:
        pass
    assert not (await b.rate_limit("writes:s:ann", 10)).allowed
    assert (await b.rate_limit("writes:s:bob", 10)).allowed


def test_gcra_counts_whole_intervals_despite_floating_point() -> None:
    # 1000/3 ms intervals: a fresh quota of 3 leaves exactly 2 after one request, at any
    # time (at 12345.678 ms a plain floor division gave 1)
    for now in (0.0, 12_345.678, 1_795_000_000_000.5):
        decision, _ = gcra(0.0, now, 3)
        assert decision.remaining == 2, now
