"""A ScriptLane whose connection's handshake gets an error reply (engine/redis/script_lane.py,
`_connect`): its calls must still be settled. redis-py raises a plain ResponseError for a
handshake reply such as -BUSY or an out-of-range SELECT; had it ended the connect task, the
queued calls would never be settled (an admission, shielded by RedisLimits, would wait for
ever, and so would every re-sync)."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from quart_app.engine.base import EngineUnavailable
from quart_app.engine.redis.script_lane import ScriptLane

from ..redis_hold import busy
from ..services import RedisServer
from .test_script_lane import new_script


async def _settled(call: asyncio.Future[Any], seconds: float) -> BaseException | Any:
    """The call's outcome (its exception as the value); TimeoutError if it never settles."""
    call.add_done_callback(lambda done: done.cancelled() or done.exception())  # (retrieved)
    try:
        return await asyncio.wait_for(asyncio.shield(call), seconds)
    except TimeoutError:
        raise
    except Exception as exc:  # noqa: BLE001 - the call's own outcome
        return exc


async def test_a_call_whose_connection_cannot_select_its_db_is_settled(redis_url: str) -> None:
    client = aioredis.from_url(redis_url.rsplit("/", 1)[0] + "/99")  # (16 dbs: SELECT fails)
    lane = ScriptLane(new_script(client), bound=2)
    try:
        outcome = await _settled(lane.submit([], ["a", 1]), 10)
        assert isinstance(outcome, EngineUnavailable)
    finally:
        await lane.close()
        await client.aclose()


async def test_a_call_connecting_while_redis_is_busy_is_settled() -> None:
    """REDIS_URL on db 1; a long script holds Redis past busy-reply-threshold (a batch that
    timed out on it is what makes the lane connect again): the new connection's SELECT
    gets -BUSY (SELECT is not allow-busy)."""
    server = RedisServer()
    server.start()
    url = server.url.rsplit("/", 1)[0] + "/1"
    client = aioredis.from_url(url)
    lane = ScriptLane(new_script(client), bound=1)
    try:
        async with busy(server.url, 4000):
            outcome = await _settled(lane.submit([], ["a", 1]), 10)
            assert isinstance(outcome, EngineUnavailable)
    finally:
        await lane.close()
        await client.aclose()
        server.stop()
