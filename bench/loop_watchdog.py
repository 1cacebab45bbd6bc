"""`rankpulse serve` with a watchdog on its event loop: finds stalls of the loop itself.

A thread posts a callback to the serving loop every 20 ms; when the loop has not run it after
$STALL_MS (default 120), the thread samples the main thread's stack until it does and appends
the stall's length and its most frequent stacks to $STALL_OUT. A run with no stall writes
nothing. Used to tell a stall of the server's loop from delays elsewhere (the client, TCP):

    STALL_OUT=/tmp/stalls.txt taskset -c 0 .venv/bin/python bench/loop_watchdog.py serve --port 8000
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections import Counter
from typing import Any

import uvloop

STALL_SECONDS = float(os.environ.get("STALL_MS", "120")) / 1000
_loops: list[Any] = []
_run = uvloop.run


def _new_loop() -> Any:
    loop = uvloop.new_event_loop()
    _loops.append(loop)
    return loop


def _run_watched(main: Any, **kwargs: Any) -> Any:
    """uvloop.run, with a loop this module knows (its default factory is bound at import)."""
    return _run(main, loop_factory=_new_loop, **kwargs)


def _watch(main_thread: int, out_path: str) -> None:
    while not _loops:
        time.sleep(0.1)
    loop = _loops[0]
    while True:
        ran = threading.Event()
        posted = time.monotonic()
        try:
            loop.call_soon_threadsafe(ran.set)
        except RuntimeError:  # the loop closed: the server is gone
            return
        if not ran.wait(STALL_SECONDS):
            stacks: Counter[str] = Counter()
            while not ran.wait(0.03) and sum(stacks.values()) < 50:
                frame = sys._current_frames().get(main_thread)
                if frame is not None:
                    stacks["".join(traceback.format_stack(frame, limit=12))] += 1
            stall_ms = (time.monotonic() - posted) * 1000
            with open(out_path, "a") as out:
                out.write(f"=== stall of {stall_ms:.0f} ms at {time.time():.3f}\n")
                for stack, samples in stacks.most_common(3):
                    out.write(f"--- {samples} samples\n{stack}\n")
        time.sleep(0.02)


if __name__ == "__main__":
    uvloop.run = _run_watched  # (rankpulse serve runs Hypercorn with uvloop.run)
    threading.Thread(
        target=_watch, args=(threading.get_ident(), os.environ["STALL_OUT"]), daemon=True
    ).start()
    from quart_app.cli import main

    sys.argv = ["rankpulse", *sys.argv[1:]]
    main()
