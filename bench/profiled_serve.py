"""`rankpulse serve` under cProfile, switched on and off by signals (bench/profile_results.py).

SIGUSR1 starts profiling CPU time (and counting the cyclic garbage collector's passes and time);
SIGUSR2 stops, writes the cProfile stats to $PROFILE_OUT and the collector's figures to
$PROFILE_OUT.gc.json. Only the timed phase is profiled: start-up and seeding are not.
"""

from __future__ import annotations

import cProfile
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

# CPU time of this process, not wall time: on a shared machine a wall clock charges
# whatever function was running when the scheduler took the core away.
_profiler = cProfile.Profile(time.process_time)
_gc: dict[str, Any] = {"passes": [0, 0, 0], "seconds": [0.0, 0.0, 0.0], "on": False}
_started: list[float] = []


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    if not _gc["on"]:
        return
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        generation = info["generation"]
        _gc["passes"][generation] += 1
        _gc["seconds"][generation] += time.perf_counter() - _started[0]


def _start(*_: object) -> None:
    _gc["on"] = True
    _profiler.enable()


def _stop(*_: object) -> None:
    _profiler.disable()
    _gc["on"] = False
    out = os.environ["PROFILE_OUT"]
    _profiler.dump_stats(out)
    gc_figures = {**_gc, "tracked_objects": len(gc.get_objects()), "frozen": gc.get_freeze_count()}
    Path(out + ".gc.json").write_text(json.dumps(gc_figures))


if __name__ == "__main__":
    gc.callbacks.append(_gc_timer)
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    from quart_app.cli import main

    sys.argv = ["rankpulse", *sys.argv[1:]]
    main()
