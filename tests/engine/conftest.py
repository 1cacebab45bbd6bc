"""Fixtures of the engine tests: engines of both kinds, and a listener that can be awaited."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from quart_app.engine.base import BoardEntry, Draft, Engine, Event, Publication
from quart_app.engine.board_state import BoardIncomplete
from quart_app.engine.hub import Hub
from quart_app.engine.memory import MemoryEngine
from quart_app.engine.redis import RedisEngine

EngineFactory = Callable[..., Awaitable[Engine]]


class Collector:
    """A listener recording every delivered event; `wait_for` awaits a condition on them
    (with a timeout, never a fixed sleep)."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.events: list[Event] = []
        self.batches = 0
        self._changed = asyncio.Event()
        if engine is not None:
            engine.listen(self)

    def __call__(self, events: list[Event]) -> None:
        self.events.extend(events)
        self.batches += 1
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[list[Event]], bool], timeout: float = 5.0, what: str = ""
    ) -> list[Event]:
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what or predicate}; "
                    f"got {self.events[-20:]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
        return self.events

    async def wait_count(self, n: int, timeout: float = 5.0) -> list[Event]:
        return await self.wait_for(lambda ev: len(ev) >= n, timeout, f"{n} events")

    def named(self, name: str) -> list[Event]:
        return [event for event in self.events if event.name == name]

    async def flush(self, engine: Engine, timeout: float = 5.0) -> Event:
        """Publish a marker on `engine` and wait until it arrives here: everything published
        before it has arrived too (the feed is ordered)."""
        [marker] = await engine.publish(
            Publication(events=(Draft(("test",), "test:marker", {"id": uuid.uuid4().hex}),))
        )
        await self.wait_for(
            lambda ev: any(e.text == marker.text for e in ev), timeout, "the marker"
        )
        return marker


def draft(n: int = 0, rooms: tuple[str, ...] = ("matches",), **data: Any) -> Draft:
    return Draft(rooms, "announcement", {"n": n, **data})


def rows(*entries: BoardEntry) -> Callable[[], Awaitable[list[BoardEntry]]]:
    """A board loader (what rebuild reads from SQL) that returns `entries`."""

    async def load() -> list[BoardEntry]:
        return list(entries)

    return load


async def ready_board(engine: Engine) -> None:
    """As the runtime does at start: a board never built (a fresh Redis) is built, empty."""
    try:
        await engine.board_page(0, 0)
    except BoardIncomplete:
        await engine.board_replace(rows())


async def _stop_all(engines: list[Engine]) -> None:
    for engine in reversed(engines):
        with contextlib.suppress(Exception):
            await engine.stop()


@pytest.fixture(name="backend", params=["memory", "redis"])
def _backend(request: pytest.FixtureRequest) -> str | None:
    """None for the memory engine, else the URL of a flushed Redis."""
    if request.param == "memory":
        return None
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture(name="make_engine")
async def _make_engine(backend: str | None) -> AsyncIterator[EngineFactory]:
    """Build and start engines of the parametrized kind; all are stopped afterwards."""
    engines: list[Engine] = []

    async def make(**options: Any) -> Engine:
        engine: Engine
        if backend is None:
            engine = MemoryEngine(**options)
        else:
            engine = RedisEngine(backend, **options)
        await engine.start()
        engines.append(engine)
        await ready_board(engine)
        return engine

    yield make
    await _stop_all(engines)


@pytest.fixture(name="engine")
async def _engine(make_engine: EngineFactory) -> Engine:
    return await make_engine()


@pytest.fixture(name="make_redis")
async def _make_redis(redis_url: str) -> AsyncIterator[Callable[..., Awaitable[RedisEngine]]]:
    """Redis engines on the test's Redis (same prefix unless told): stopped afterwards."""
    engines: list[Engine] = []

    async def make(url: str | None = None, **options: Any) -> RedisEngine:
        engine = RedisEngine(url or redis_url, **options)
        await engine.start()
        engines.append(engine)
        await ready_board(engine)
        return engine

    yield make
    await _stop_all(engines)


@pytest.fixture(name="hub")
async def _hub() -> AsyncIterator[Hub]:
    """A hub on the memory engine with a small byte budget (20,000), for the send-budget and
    window tests. (test_hub.py defines its own.)"""
    engine = MemoryEngine()
    await engine.start()
    hub = Hub(engine, queue_limit=1000, queue_bytes=20_000)
    await hub.start()
    yield hub
    await hub.stop()
    await engine.stop()
