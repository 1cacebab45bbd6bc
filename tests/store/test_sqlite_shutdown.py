"""SQLite connections run their statements on a thread each (aiosqlite). A task cancelled
again while its connection was closing (a shutdown's cancellations come in waves) left that
connection open with a statement still queued; `disconnect()` returned at once and, once the
event loop had closed, the statement's end raised `RuntimeError: Event loop is closed` in the
connection's thread. After `disconnect()`, no connection of the store may still be working."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from quart_app.runtime import STOP_STEP_SECONDS
from quart_app.store.database import Store


def _aiosqlite_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


async def _cancel_at_each_wait(task: asyncio.Task[object], times: int) -> None:
    """Cancel `task` at each of its next `times` waits (its query, its release, its close)."""
    for _ in range(times):
        task.cancel()
        for _ in range(5):  # the task runs to its next wait: no I/O happens in between
            await asyncio.sleep(0)


# Cancelled at its statement; again at its close; a third time at its thread's stop (the
# one that left the connection working after disconnect).
@pytest.mark.parametrize("cancellations", [1, 2, 3])
def test_disconnect_finishes_connections_whose_close_was_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cancellations: int
) -> None:
    thread_errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: thread_errors.append(args.exc_value))
    threads_before = _aiosqlite_threads()
    statement_may_end = threading.Event()

    async def scenario() -> None:
        store = Store(f"sqlite:///{tmp_path}/pulse.db")
        await store.connect()
        in_statement = asyncio.Event()

        async def slow_query() -> object:
            async with store.db.connection() as conn:
                await conn.raw_connection.create_function(
                    "held_by_test", 0, lambda: int(statement_may_end.wait(30))
                )
                in_statement.set()
                return await conn.fetch_val("SELECT held_by_test()")

        task = asyncio.create_task(slow_query())
        await asyncio.wait_for(in_statement.wait(), 10)
        await asyncio.sleep(0)  # the SELECT is queued on the connection's thread
        await _cancel_at_each_wait(task, cancellations)
        # The statement ends a moment after disconnect() began: disconnect must wait for it.
        threading.Timer(0.2, statement_may_end.set).start()
        await store.disconnect()
        # Cancelled fewer times, the task itself waited for its close; it ends cancelled.
        await asyncio.wait([task], timeout=10)
        assert task.cancelled()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
        statement_may_end.set()
    for thread in _aiosqlite_threads() - threads_before:
        thread.join(10)
    assert thread_errors == []
    assert not (_aiosqlite_threads() - threads_before)


# A connection whose release never comes, under Runtime.stop's budget for disconnect (1 s):
# it is stopped when the budget ends, and nothing holds the loop's shutdown. (Found in review:
# the wait was a thread join on the default executor, cancelled by the budget before the
# stop, holding asyncio.run's executor shutdown for the busy timeout; the connection's
# thread then kept the process alive. PROTOCOL 3.7: exit within DRAIN_SECONDS + 5 s.)
def test_a_connection_nobody_closed_does_not_hold_the_exit_past_the_stop_budget(
    tmp_path: Path,
) -> None:
    threads_before = _aiosqlite_threads()
    abandoned: list[Any] = []

    async def stop_like_the_runtime() -> None:
        store = Store(f"sqlite:///{tmp_path}/pulse.db")
        await store.connect()
        conn = store.db.connection()
        await conn.__aenter__()  # a connection whose release never comes
        await conn.fetch_val("SELECT 1")
        abandoned.append(conn.raw_connection)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_STEP_SECONDS):  # as Runtime.stop bounds it
                await store.disconnect()

    async def stop_abandoned() -> None:
        for raw in abandoned:
            if not raw._thread.is_alive():
                continue  # (stopped by the store, as it should be)
            future = raw.stop()
            if future is not None:
                await asyncio.wait_for(future, 10)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(stop_like_the_runtime())
        started = time.monotonic()
        loop.run_until_complete(loop.shutdown_default_executor())  # (what asyncio.run does)
        shutdown_seconds = time.monotonic() - started
        left = _aiosqlite_threads() - threads_before
        for thread in left:
            thread.join(2.0)
        still_alive = [t for t in left if t.is_alive()]
    finally:
        loop.run_until_complete(stop_abandoned())  # (the test's own clean-up)
        loop.close()
        for thread in _aiosqlite_threads() - threads_before:
            thread.join(10)
    assert shutdown_seconds < 5.0
    assert still_alive == []  # a live aiosqlite thread keeps the interpreter from exiting
