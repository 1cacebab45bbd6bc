"""RedisLimits' bookkeeping when an admission's caller leaves (its task cancelled: a client
that gave up on its handshake, a shutdown) while its call waits in the ScriptLane. The counts
are marked dirty so that a whole sync puts Redis back to the local counts; that sync must not
run before the orphaned call is settled. (Found in review: the sync went first, the call was
sent after it and counted a stream nobody held, with nothing dirty any more: the user was
refused, 429, with no stream open, for as long as the instance lived.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from quart_app.engine.redis import RedisEngine

from ..helpers import eventually
from ..redis_hold import Held


async def test_an_admission_whose_caller_left_leaves_no_stream_counted(
    make_redis: Callable[..., Awaitable[RedisEngine]], redis_url: str
) -> None:
    engine = await make_redis()
    limits: Any = engine._limits
    lane = limits._admit
    assert await engine.stream_admit("s:warm", 5)  # (counts synced: nothing dirty)
    await engine.stream_release("s:warm")
    assert not limits._dirty

    # A batch out and not answered yet: Redis held busy by a script (single-threaded).
    client = aioredis.from_url(redis_url)
    held = await Held.hold(client, 1000)
    try:
        before = lane.batches
        x = asyncio.create_task(engine.stream_admit("s:xavier", 5))  # batch 1, unanswered
        await eventually(lambda: _true(lane.batches == before + 1), 10, "batch 1 out")
        ann = asyncio.create_task(engine.stream_admit("s:ann", 1))  # queued: batch 2
        await eventually(lambda: _true(len(lane._queue) == 1), 10, "ann's call queued")
        x.cancel()
        ann.cancel()  # ann's client gave up before its admission was even sent
        await asyncio.wait([x, ann])
        assert limits._dirty  # (the bookkeeping knows the outcome is unknown)
        # Bob's admission re-syncs first: not before the two orphaned calls are settled.
        bob = asyncio.create_task(engine.stream_admit("s:bob", 5))
        assert await asyncio.wait_for(bob, 10)
        await eventually(lambda: _true(not lane._batch and not lane._queue), 10, "the lane idle")
        await held.released()
    finally:
        await client.aclose()
    # ann holds no stream anywhere: her one allowed stream must be admitted.
    assert await engine.stream_admit("s:ann", 1)


async def _true(value: bool) -> bool:
    return value
