"""What every stream gives back when it ends: its admission slot and its presence."""

from __future__ import annotations

import asyncio
import contextlib

from ..engine.hub import Connection
from ..runtime import Runtime
from .limits import StreamSlot
from .streams import leave_presence

# While draining, the bookkeeping of an ending stream may wait this long for Redis. Both the
# per-user stream count and presence are kept per instance and lapse with the instance's
# presence deadline, so what is not recorded now is not leaked; but a process that waits on
# an unreachable (or swamped) Redis for each of its streams would miss DRAIN_SECONDS + 5 s.
DRAINING_BOOKKEEPING_SECONDS = 0.5


async def release_stream(rt: Runtime, slot: StreamSlot, conn: Connection | None) -> None:
    if not rt.draining:
        await slot.release()
        if conn is not None:
            await leave_presence(rt, conn)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAINING_BOOKKEEPING_SECONDS):
            await slot.release()
            if conn is not None:
                await leave_presence(rt, conn)
