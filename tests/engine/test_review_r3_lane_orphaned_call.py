"""Review R3: RedisLimits' bookkeeping when an admission's caller leaves (its task cancelled:
a client that gave up on its handshake, a shutdown) while its call waits in the ScriptLane.
`_call_lane` marks the counts dirty so that a whole sync puts Redis back to the local counts;
but the lane still sends the call (queued calls whose future is cancelled are not dropped),
and the sync goes through the pool, not the lane: it can run before the orphaned call. The
call then counts a stream nobody holds, after the sync, with nothing dirty any more, and the
user is refused (429) with no stream open, for as long as this instance lives (or until some
other failure happens to re-sync)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from quart_app.engine.redis import RedisEngine


async def _until(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


@pytest.mark.xfail(
    strict=True,
    reason="review R3: a call whose caller left is still sent by the lane, after the re-sync "
    "meant to cover it: a phantom stream count",
)
async def test_an_admission_whose_caller_left_leaves_no_stream_counted(
    make_redis: Callable[..., Awaitable[RedisEngine]],
) -> None:
    engine = await make_redis()
    limits: Any = engine._limits
    lane = limits._admit
    assert await engine.stream_admit("s:warm", 5)  # (counts synced: nothing dirty)
    await engine.stream_release("s:warm")
    assert not limits._dirty

    # A batch out and not answered yet (held here, before the lane's run sends it).
    gate = asyncio.Event()
    run, held = lane._run, [True]

    async def held_run(call: Awaitable[Any]) -> Any:
        if held[0]:
            held[0] = False
            await gate.wait()
        return await run(call)

    lane._run = held_run
    try:
        x = asyncio.create_task(engine.stream_admit("s:xavier", 5))  # batch 1, held
        await _until(lambda: lane._sender is not None and not lane._queue, "batch 1 out")
        ann = asyncio.create_task(engine.stream_admit("s:ann", 1))  # queued: batch 2
        await _until(lambda: len(lane._queue) == 1, "ann's call queued")
        x.cancel()
        ann.cancel()  # ann's client gave up before its admission was even sent
        await asyncio.wait([x, ann])
        assert limits._dirty  # (the bookkeeping knows the outcome is unknown)
        bob = asyncio.create_task(engine.stream_admit("s:bob", 5))  # re-syncs, then queues
        await _until(lambda: len(lane._queue) == 2, "bob's call queued after the re-sync")
        gate.set()
        assert await asyncio.wait_for(bob, 10)
        await _until(lambda: lane._sender is None, "the lane idle")
    finally:
        gate.set()
        lane._run = run
    # ann holds no stream anywhere: her one allowed stream must be admitted.
    assert await engine.stream_admit("s:ann", 1)
