"""The cyclic garbage collector of a serving process: start-up's heap frozen (issue 9).

A full collection walks every tracked object. After start-up more than half of them (about
120,000: modules, classes, functions, the app) live for the whole process, and a full pass
over them took 0.2-0.6 s on this machine under 1,000 long-pollers: every request in flight,
a write among them, waited it out (POST p99). gc.freeze() moves them to the permanent
generation, which collections skip; they are still freed by reference counting. Only a
serving process does this (`rankpulse serve`), once it has started: a test process that
builds many apps must keep collecting theirs.

What stays is the connections' own objects (about 90,000 under 1,000 keep-alive pollers), and
a crowd promotes its waiting polls' objects into the oldest generation fast enough for a full
pass every few seconds. A full pass waits for FULL_PASS_EVERY passes of the middle generation
instead of Python's 10 (measured under 1,000 pollers: 2 passes in a run instead of 4, the
longest 144 ms instead of 220 ms, loaded machine); cyclic garbage that reached the oldest
generation is freed that much later, reference-counted objects at once as before.
"""

from __future__ import annotations

import gc

from quart import Quart

FULL_PASS_EVERY = 100


def freeze_once_started(app: Quart) -> None:
    """Freeze the heap when `app` has started (after its own before_serving hooks)."""

    @app.before_serving
    async def _freeze_startup_heap() -> None:
        gc.collect()
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_PASS_EVERY)
