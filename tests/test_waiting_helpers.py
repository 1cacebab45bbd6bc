"""The polling helpers every other test leans on: when they time out, the failure must say what
they last saw (the last value, the last exception), or the test that fails tells nobody why."""

from __future__ import annotations

import pytest

from .helpers import eventually
from .services import wait_until


async def test_eventually_names_the_last_exception_on_timeout() -> None:
    async def check() -> bool:
        raise ConnectionRefusedError("redis at 127.0.0.1:1 refused")

    with pytest.raises(AssertionError) as failure:
        await eventually(check, 0.1, "redis to answer")
    assert "redis to answer" in str(failure.value)
    assert "redis at 127.0.0.1:1 refused" in str(failure.value)


async def test_eventually_names_the_last_value_on_timeout() -> None:
    seen = iter(range(1000))

    async def check() -> list[int]:
        return [] if next(seen) < 1000 else [1]

    with pytest.raises(AssertionError, match=r"waiting for the board.*last value: \[\]"):
        await eventually(check, 0.1, "the board")


async def test_eventually_returns_once_the_check_holds_after_failures() -> None:
    calls = 0

    async def check() -> bool:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("not yet")
        return True

    await eventually(check, 5, "the third call", interval=0)
    assert calls == 3


def test_wait_until_names_the_last_value_on_timeout() -> None:
    ready_instances: list[str] = []
    with pytest.raises(TimeoutError, match=r"both instances.*last value: 0"):
        wait_until(lambda: len(ready_instances), 0.1, "both instances")
