"""The fault proxy itself, against a real redis-server: PING passes through; a delay adds
latency; a blackhole makes a PING time out (no error, no close); a reset makes the client see a
connection error; passing again recovers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .faults import FaultProxy
from .services import PostgresServer, RedisServer


@pytest.fixture(name="proxy")
def _proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(redis_server.port).start()
    yield proxy
    proxy.stop()


def client(proxy: FaultProxy, timeout: float = 1.0) -> redis.Redis:
    """A client on one connection that reports the first failure instead of retrying it away
    (a pooled client checks a connection before use and would quietly replace a reset one)."""
    return redis.Redis(
        port=proxy.port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        single_connection_client=True,
    )


def test_ping_passes_through(proxy: FaultProxy) -> None:
    with client(proxy) as r:
        assert r.ping() is True
        r.set("through-the-proxy", "yes")
        assert r.get("through-the-proxy") == b"yes"


def test_delay_adds_latency_to_each_round_trip(proxy: FaultProxy) -> None:
    with client(proxy, timeout=5) as r:
        r.ping()
        proxy.delay(0.25)
        started = time.monotonic()
        assert r.ping() is True
        # Both directions are delayed: a round trip takes at least twice the delay.
        assert time.monotonic() - started >= 0.5
        proxy.pass_through()
        started = time.monotonic()
        r.ping()
        assert time.monotonic() - started < 0.25


def test_blackhole_makes_a_ping_time_out_and_passing_again_recovers(proxy: FaultProxy) -> None:
    held = client(proxy)
    assert held.ping() is True
    proxy.blackhole()
    with pytest.raises(redis.TimeoutError):
        held.ping()  # an open connection: the request vanishes, no error comes back
    with pytest.raises(redis.TimeoutError):
        client(proxy).ping()  # a new connection is accepted, then silence (even its hello)
    assert proxy.connections >= 1  # held, not closed

    proxy.pass_through()
    with client(proxy) as after:
        assert after.ping() is True
    held.close()


def test_reset_makes_the_client_see_a_connection_error(proxy: FaultProxy) -> None:
    r = client(proxy)
    assert r.ping() is True
    proxy.reset()
    with pytest.raises(redis.ConnectionError):
        r.ping()
    r.close()
    with client(proxy) as fresh:
        assert fresh.ping() is True  # a new connection goes through: the mode is still pass


async def test_the_proxy_works_from_an_async_test(proxy: FaultProxy) -> None:
    r = aioredis.Redis(port=proxy.port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        assert await r.ping() is True
        proxy.blackhole()
        with pytest.raises(redis.TimeoutError):
            await r.ping()
        proxy.pass_through()
        await asyncio.sleep(0)  # let the held connection's reset arrive
        fresh = aioredis.Redis(port=proxy.port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
        assert await fresh.ping() is True
        await fresh.aclose()
    finally:
        await r.aclose()


@pytest.mark.postgres
async def test_the_proxy_carries_and_cuts_postgresql(postgres_server: PostgresServer) -> None:
    import asyncpg

    proxy = FaultProxy(postgres_server.port).start()
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
    try:
        conn = await asyncpg.connect(url, timeout=5)
        assert await conn.fetchval("SELECT 1") == 1

        proxy.blackhole()
        with pytest.raises(TimeoutError):
            await conn.fetchval("SELECT 1", timeout=1)
        proxy.pass_through()  # the held connection is reset: its stream has a hole
        conn.terminate()

        conn = await asyncpg.connect(url, timeout=5)
        assert await conn.fetchval("SELECT 2") == 2
        proxy.reset()
        with pytest.raises((asyncpg.ConnectionDoesNotExistError, ConnectionError)):
            await conn.fetchval("SELECT 3", timeout=5)
        conn.terminate()

        conn = await asyncpg.connect(url, timeout=5)
        assert await conn.fetchval("SELECT 4") == 4
        await conn.close()
    finally:
        proxy.stop()
