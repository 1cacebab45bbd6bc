"""A Redis that answers but cannot run a call now: a read-only replica (a plain redis:// URL
whose master was demoted: a failover behind one address) or one held past busy-reply-threshold
by a script (-BUSY to everything else). Both are "unavailable", as when Redis does not answer:
a stream admission fails open (RedisLimits.admit) and a publish is EngineUnavailable (the
outbox keeps the write). Found in review: through the ScriptLane, READONLY and BUSY were a
call's own error and reached the caller raw."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from quart_app.engine.base import EngineUnavailable, Publication
from quart_app.engine.redis import RedisEngine

from ..redis_hold import busy
from ..services import RedisServer
from .conftest import draft


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("with_presence", [False, True], ids=["anonymous", "with-presence"])
async def test_an_admission_on_a_demoted_master_fails_open_as_before(
    own_redis: RedisServer,
    make_redis: Callable[..., Awaitable[RedisEngine]],
    with_presence: bool,
) -> None:
    engine = await make_redis(own_redis.url)
    assert await engine.stream_admit("s:ann", 3)  # (counts synced: nothing dirty)
    admin = aioredis.from_url(own_redis.url)
    try:
        await admin.execute_command("REPLICAOF", "127.0.0.1", _closed_port())
        if with_presence:
            admitted = await engine.stream_admit_and_enter("s:bob", 3, "bob")
        else:
            admitted = await engine.stream_admit("s:bob", 3)
        assert admitted  # admitted without the per-user check, as when Redis is unreachable
    finally:
        await admin.execute_command("REPLICAOF", "NO", "ONE")
        await admin.aclose()


async def test_an_admission_while_a_script_holds_redis_fails_open(
    own_redis: RedisServer,
    make_redis: Callable[..., Awaitable[RedisEngine]],
) -> None:
    """Past busy-reply-threshold Redis answers every other command -BUSY at once: it cannot
    run the admission now, as when it does not answer; the stream is admitted open."""
    engine = await make_redis(own_redis.url)
    assert await engine.stream_admit("s:ann", 3)  # (counts synced: nothing dirty)
    async with busy(own_redis.url, 2500):
        assert await asyncio.wait_for(engine.stream_admit("s:bob", 3), 10)


async def test_a_publish_while_a_script_holds_redis_is_engine_unavailable(
    own_redis: RedisServer,
    make_redis: Callable[..., Awaitable[RedisEngine]],
) -> None:
    """Every Redis call, not only admissions: -BUSY is 'not now' (EngineUnavailable: the
    outbox keeps the write and publishes it later), never a raw ResponseError (a 500)."""
    engine = await make_redis(own_redis.url)
    async with busy(own_redis.url, 2500):
        with pytest.raises(EngineUnavailable):
            await engine.publish(Publication(events=(draft(1),)))
