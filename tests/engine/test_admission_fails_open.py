"""A stream admission whose Redis has become a read-only replica (a plain redis:// URL whose
master was demoted: a failover behind one address) fails open, as when Redis is unreachable
(RedisLimits.admit). Found in review: through the ScriptLane, READONLY was a call's own error
and reached the caller raw (the handshake ended in an exception instead of being admitted)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from quart_app.engine.redis import RedisEngine

from ..services import RedisServer


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
