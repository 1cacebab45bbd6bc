"""A serving process freezes start-up's heap once its app has started (gc_policy.py): full
collections then skip the ~120,000 objects that live as long as the process."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import pytest
from quart import Quart

from quart_app.gc_policy import FULL_PASS_EVERY, freeze_once_started


@pytest.fixture(name="unfrozen")
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # the test process keeps collecting the apps other tests build
    gc.set_threshold(*thresholds)


async def test_the_heap_is_frozen_once_the_app_has_started(
    make_app: Callable[..., Quart], unfrozen: None
) -> None:
    app = make_app()
    freeze_once_started(app)
    assert gc.get_freeze_count() == 0
    async with app.test_app():
        assert gc.get_freeze_count() > 50_000
        assert gc.get_threshold()[2] == FULL_PASS_EVERY
