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
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..base import EngineUnavailable
from . import packing

packing.install()  # (hiredis packs commands: see packing.py)

REDIS_POOL_SIZE = 100  # commands in flight per instance; more wait (up to 5 s) for one
COMMAND_TIMEOUT = 5.0
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)

BusMessage = tuple[Literal["subscribed", "message"], str]


def cannot_run(reply: object) -> bool:
    """Redis answered, but cannot run the call now: gone (a lost connection, a timeout),
    read-only (a master demoted behind a plain URL), loading, or -BUSY (a script holds it past
    busy-reply-threshold and every other command is refused at once): as if it did not
    answer. The lane (script_lane.py) judges its replies by this too."""
    return isinstance(reply, UNAVAILABLE) or (
        isinstance(reply, ResponseError) and str(reply).startswith("BUSY")
    )


async def bounded(call: Awaitable[Any]) -> Any:
    """Await one Redis call: EngineUnavailable when Redis does not answer (`cannot_run`)."""
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            return await call
    except TimeoutError as exc:
        raise EngineUnavailable("redis: no answer in time") from exc
    except Exception as exc:
        if cannot_run(exc):
            raise EngineUnavailable(f"redis: {exc}") from exc
        raise


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


SENTINEL_SCHEME = "redis+sentinel://"


def split_hosts_url(
    url: str, scheme: str, what: str
) -> tuple[list[tuple[str, int]], str | None, str | None, str]:
    """``scheme[user:password@]host:port[,host:port...][/path]`` (the Sentinel and Cluster
    forms): the addresses, the credentials and the path after the hosts."""
    if not url.startswith(scheme):
        raise ValueError(f"not a {scheme} URL")
    hosts, _, path = url[len(scheme) :].partition("/")
    userinfo, at, hosts = hosts.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    addresses = []
    for hostport in hosts.split(","):
        host, colon, port = hostport.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad {what} address {hostport!r} (host:port)")
        addresses.append((host.strip("[]"), int(port)))
    return addresses, username, password, path


@dataclass(frozen=True)
class SentinelURL:
    """``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`` (PROTOCOL 6).
    The credentials are the master's; the sentinels are asked without any."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        sentinels, username, password, path = split_hosts_url(url, SENTINEL_SCHEME, "sentinel")
        parts = [part for part in path.split("/") if part]
        if not parts or len(parts) > 2:
            raise ValueError("needs /service_name[/db] after the sentinels")
        if len(parts) == 2 and not parts[1].isdigit():
            raise ValueError(f"bad db number {parts[1]!r}")
        db = int(parts[1]) if len(parts) == 2 else 0
        return cls(sentinels, unquote(parts[0]), db, username, password)


def connect(url: str, *, bus_health_check_interval: int) -> RedisConnection:
    """The clients for REDIS_URL `url`, whichever form it has (PROTOCOL 6)."""
    if url.startswith("redis+cluster://"):
        from .cluster import ClusterConnection  # (it builds on this module)

        return ClusterConnection(url, bus_health_check_interval=bus_health_check_interval)
    return RedisConnection(url, bus_health_check_interval=bus_health_check_interval)


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel pool (each new connection asks the sentinels where the master is) that
    waits for a free connection instead of failing a burst, like the plain pool below."""


class RedisConnection:
    """The clients of one engine (see the module docstring)."""

    bus_publish = "PUBLISH"  # the command the Lua scripts announce on the bus with

    def __init__(self, url: str, *, bus_health_check_interval: int) -> None:
        self.url = url
        self.sentinel: Sentinel | None = None
        if url.startswith(SENTINEL_SCHEME):
            self._connect_sentinel(SentinelURL.parse(url), bus_health_check_interval)
            return
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
        # TCP keepalive is a TCP socket option: redis-py's unix-socket connection refuses
        # the argument (REDIS_URL=unix://, PROTOCOL 6).
        tcp: dict[str, Any] = {} if url.startswith("unix://") else {"socket_keepalive": True}
        self.client: aioredis.Redis = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=REDIS_POOL_SIZE,
                timeout=5,
                decode_responses=True,
                socket_connect_timeout=2.0,
                socket_timeout=None,
                health_check_interval=10,
                **tcp,
                retry=Retry(NoBackoff(), 0),
            )
        )
        # The subscriber: errors surface at once, the bus loop reconnects and backfills.
        self.bus_client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=None,
            health_check_interval=bus_health_check_interval,
            retry=Retry(NoBackoff(), 0),
            **tcp,
        )

    def _connect_sentinel(self, url: SentinelURL, bus_health_check_interval: int) -> None:
        """The same two clients, on the master the sentinels name. A connection that breaks
        (the master died) or finds a demoted master (READONLY) is dropped, and the next one
        asks the sentinels again: the pool follows a failover, and so does the bus, which
        opens a new subscription from its pool after every error. Commands are still not
        retried (see above): during a failover they fail fast with EngineUnavailable and the
        callers retry, as for any outage."""
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": 2.0,
            "socket_timeout": None,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0),
            "username": url.username,
            "password": url.password,
            "db": url.db,
        }
        self.sentinel = Sentinel(  # type: ignore[no-untyped-call]
            url.sentinels,
            sentinel_kwargs={"socket_connect_timeout": 2.0, "socket_timeout": 2.0},
        )
        self.client = self.sentinel.master_for(
            url.service,
            connection_pool_class=_BlockingSentinelPool,
            max_connections=REDIS_POOL_SIZE,
            timeout=5,
            health_check_interval=10,
            **common,
        )
        self.bus_client = self.sentinel.master_for(
            url.service, health_check_interval=bus_health_check_interval, **common
        )

    def key_prefix(self, prefix: str) -> str:
        """The key prefix to use for REDIS_PREFIX `prefix` (cluster.py adds a hash tag)."""
        return prefix

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
        """Close every client, each one even when another fails (a connection to a dead master
        may time out closing), then report the first failure. (Not Sentinel.aclose(): only
        redis-py >= 8.1 has it.)"""
        clients = [self.bus_client, self.client]
        if self.sentinel is not None:
            clients += self.sentinel.sentinels
        results = await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
