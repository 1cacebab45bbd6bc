"""Redis held busy by a Lua script (single-threaded: every other client waits, and past
`busy-reply-threshold` is answered -BUSY): a fault no proxy can make, for tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

# Holds Redis (single-threaded) for ARGV[1] ms: every other client waits meanwhile.
HOLD = """local t = redis.call('TIME'); local until_us = t[1] * 1e6 + t[2] + ARGV[1] * 1000
repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= until_us
return 1"""


class Held:
    """Redis held busy by a script on a connection of its own (single-threaded: every other
    client waits). Its command is written before `hold` returns, so a call made after it
    reaches Redis behind it; `released()` reads the script's reply."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    @classmethod
    async def hold(cls, client: aioredis.Redis, ms: int) -> Held:
        connection = client.connection_pool.make_connection()
        await connection.connect()
        await connection.send_command("EVAL", HOLD, 0, ms)
        return cls(connection)

    async def released(self) -> None:
        assert await self._connection.read_response() == 1
        await self._connection.disconnect()


@contextlib.asynccontextmanager
async def busy(url: str, ms: int) -> AsyncIterator[None]:
    """Redis held by a script past busy-reply-threshold for `ms` ms: every other command is
    answered -BUSY at once (SELECT, EVALSHA, PUBLISH alike) until it ends."""
    admin = aioredis.from_url(url)
    try:
        await admin.config_set("busy-reply-threshold", 100)
        held = await Held.hold(admin, ms)
        try:
            async with asyncio.timeout(10):
                while True:  # until Redis says so
                    try:
                        await admin.ping()
                    except ResponseError as exc:
                        if str(exc).startswith("BUSY"):
                            break
                        raise
            yield
        finally:
            await held.released()
    finally:
        await admin.aclose()
