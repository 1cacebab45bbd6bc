"""The redis-py clients of one engine, built from REDIS_URL: the one place that knows the URL
forms (PROTOCOL 6) and how the bus is subscribed to. The other modules get a `RedisConnection`
and never look at the URL.

Two clients: `client` for commands and scripts (a pool), and `bus_client` for subscriptions
(one connection per subscription, outside the pool). Subscriptions go through `Subscription`
and publications through `RedisConnection.publish`, so another pub/sub flavour (sharded
SSUBSCRIBE/SPUBLISH on Redis Cluster) is one subclass here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..base import EngineUnavailable

REDIS_POOL_SIZE = 100  # commands in flight per instance; more wait (up to 5 s) for one
COMMAND_TIMEOUT = 5.0
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)

BusMessage = tuple[Literal["subscribed", "message"], str]


async def bounded(call: Awaitable[Any]) -> Any:
    """Await one Redis call: EngineUnavailable when Redis does not answer."""
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            return await call
    except TimeoutError as exc:
        raise EngineUnavailable("redis: no answer in time") from exc
    except UNAVAILABLE as exc:
        raise EngineUnavailable(f"redis: {exc}") from exc


class Subscription:
    """One subscription to one channel, on its own connection."""

    def __init__(self, client: aioredis.Redis, channel: str) -> None:
        self._pubsub: PubSub = client.pubsub()
        self._channel = channel

    async def subscribe(self) -> None:
        """Send the SUBSCRIBE; its confirmation comes as a ("subscribed", channel) message."""
        await self._pubsub.subscribe(self._channel)

    async def next_message(self, timeout: float | None) -> BusMessage | None:
        """The next message or confirmation; None after `timeout` seconds without one (None:
        wait for ever)."""
        message = await self._pubsub.get_message(timeout=timeout)
        if message is None:
            return None
        if message["type"] == "subscribe":
            return "subscribed", str(message["channel"])
        if message["type"] == "message":
            return "message", message["data"]
        return None

    async def close(self) -> None:
        await self._pubsub.aclose()


class RedisConnection:
    """The clients of one engine (see the module docstring)."""

    def __init__(self, url: str, *, bus_health_check_interval: int) -> None:
        self.url = url
        # socket_timeout=None: with a socket timeout, redis-py sends every command through
        # asyncio.wait_for(), which on Python 3.11 swallows a cancellation arriving meanwhile
        # (measured: ~95% of cancels of a task looping on PING were lost). Timeouts are
        # asyncio.timeout() around each call instead (`bounded`).
        # No command retries: a script that may have run must not run twice (a key-less
        # publication would be appended twice, a presence delta applied twice). A pooled
        # connection that the server closed is replaced when taken from the pool; any other
        # failure is EngineUnavailable, and the caller (outbox, presence re-sync) retries.
        # A blocking pool: a burst of more commands than connections (1,000 clients resuming)
        # waits for a free one; redis-py's default pool raised "Too many connections" at once.
        self.client: aioredis.Redis = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=REDIS_POOL_SIZE,
                timeout=5,
                decode_responses=True,
                socket_connect_timeout=2.0,
                socket_timeout=None,
                socket_keepalive=True,
                health_check_interval=10,
                retry=Retry(NoBackoff(), 0),
            )
        )
        # The subscriber: errors surface at once, the bus loop reconnects and backfills.
        self.bus_client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=None,
            socket_keepalive=True,
            health_check_interval=bus_health_check_interval,
            retry=Retry(NoBackoff(), 0),
        )

    def subscription(self, channel: str, *, from_pool: bool = False) -> Subscription:
        """A subscription on the bus client, or (`from_pool`) on a connection of the command
        pool, with the pool's health checks (the instance-call channel)."""
        return Subscription(self.client if from_pool else self.bus_client, channel)

    async def publish(self, channel: str, message: str) -> int:
        """PUBLISH on the command client: how many subscribers got it."""
        return int(await self.client.publish(channel, message))

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def close(self) -> None:
        await self.bus_client.aclose()
        await self.client.aclose()
