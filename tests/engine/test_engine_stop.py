"""Stopping the Redis engine ends every task it started and leaves no connection open, even
when a cancellation is lost on the way.

Python 3.11's asyncio.wait_for() loses a cancellation that arrives as the call it waits for
completes, and redis-py sends every command through wait_for() when the client has a socket
timeout (the Sentinel clients have one: connection.py). A task of the engine that lost the
cancel `stop()` sent it and went on after the clients were closed would open a new connection
from a closed pool, one that nobody closes: an "unclosed Connection" ResourceWarning at exit,
as seen now and then after the Sentinel failover test. (This guard passed on the code it was
written against: the cause of that warning is not proven; see the README.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from quart_app.engine.redis import RedisEngine
from quart_app.engine.redis.connection import Subscription

MakeRedis = Callable[..., Awaitable[RedisEngine]]


def _lose_the_first_cancel(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every subscription swallows the first cancellation that reaches its read, as
    wait_for() may; returns the channels that lost one."""
    lost: list[str] = []
    read = Subscription.next_message

    async def next_message(self: Subscription, timeout: float | None) -> Any:
        try:
            return await read(self, timeout)
        except asyncio.CancelledError:
            if self._channel in lost:
                raise
            lost.append(self._channel)
            return None

    monkeypatch.setattr(Subscription, "next_message", next_message)
    return lost


def _open_connections(engine: RedisEngine) -> list[str]:
    connection = engine._connection
    found = []
    for name, client in (("commands", connection.client), ("bus", connection.bus_client)):
        pool = client.connection_pool
        for conn in [*pool._available_connections, *pool._in_use_connections]:
            if conn.is_connected:
                found.append(f"{name}: {conn!r}")
    return found


async def test_stop_ends_every_listener_even_when_a_cancel_is_lost(
    make_redis: MakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost = _lose_the_first_cancel(monkeypatch)
    engine = await make_redis()
    calls_task = engine._calls._task
    assert calls_task is not None and not calls_task.done()

    await engine.stop()

    assert any(":call:" in channel for channel in lost), lost  # the case under test happened
    assert calls_task.done(), "the instance-call listener outlived stop()"
    # and nothing reconnects behind stop()'s back: give a stray task the time to try
    for _ in range(10):
        await asyncio.sleep(0.05)
        assert not _open_connections(engine)
