"""The Lua scripts (``engine/lua/*.lua``): every write of the Redis engine is one of them, so that
board rows, the seq, the log entry and the bus message of one publication happen together or
not at all. Loaded with ``register_script``: EVALSHA, and a reload on NOSCRIPT."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from ..base import EngineUnavailable
from .connection import bounded

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"

# script name -> the files it is made of (shared preludes first)
ENGINE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "publish": ("_log.lua", "_board.lua", "publish.lua"),
    "read": ("_log.lua", "read.lua"),
    "board_page": ("board_page.lua",),
    "board_page_json": ("_log.lua", "board_page_json.lua"),
    "board_player": ("board_player.lua",),
    "board_around": ("board_around.lua",),
    "board_begin": ("board_begin.lua",),
    "board_keep": ("_rebuild.lua", "board_keep.lua"),
    "board_stage": ("_board.lua", "_rebuild.lua", "board_stage.lua"),
    "board_swap": ("_rebuild.lua", "board_swap.lua"),
    "presence_change": ("_log.lua", "_presence.lua", "presence_change.lua"),
    "presence_sync": ("_log.lua", "_presence.lua", "presence_sync.lua"),
    "presence_beat": ("_log.lua", "_presence.lua", "presence_beat.lua"),
    "presence_drop": ("_log.lua", "_presence.lua", "presence_drop.lua"),
    "presence_poll": ("_log.lua", "_presence.lua", "presence_poll.lua"),
    "presence_sweep": ("_log.lua", "_presence.lua", "presence_sweep.lua"),
}


def load_script(files: Sequence[str], bus_publish: str = "PUBLISH") -> str:
    """The script made of `files`, after a line that names the command lua/_log.lua publishes
    on the bus with: PUBLISH, or SPUBLISH on Redis Cluster (cluster.py)."""
    head = f"local BUS_PUBLISH = '{bus_publish}'\n"
    return head + "\n".join((LUA_DIR / name).read_text() for name in files)


class Scripts:
    """Named scripts registered on one client; `run` bounds each call (EngineUnavailable)."""

    def __init__(
        self,
        client: aioredis.Redis,
        table: dict[str, tuple[str, ...]] = ENGINE_SCRIPTS,
        *,
        bus_publish: str = "PUBLISH",
    ) -> None:
        self._scripts = {
            name: client.register_script(load_script(files, bus_publish))
            for name, files in table.items()
        }

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await bounded(self._scripts[name](keys=keys, args=args))

    async def run_many(self, name: str, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """The calls in one round trip (a pipeline, not a transaction), run in order: one
        reply each, or the exception of that call (a script error); EngineUnavailable for
        them all when Redis does not answer."""
        return await run_pipelined(self._scripts[name], calls)


Run = Callable[[Awaitable[Any]], Awaitable[Any]]


async def run_or_error(script: Any, keys: list[str], args: list[Any], run: Run = bounded) -> Any:
    """One call's reply, or its script error as the value; EngineUnavailable raised."""
    try:
        return await run(script(keys=keys, args=args))
    except EngineUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - this call's error, as in a pipeline
        return exc


async def run_pipelined(
    script: Any, calls: Sequence[tuple[list[str], list[Any]]], run: Run = bounded
) -> list[Any]:
    """`calls` of `script` in one round trip (a pipeline, not a transaction), in order: one
    reply or script error each; EngineUnavailable for them all when Redis does not answer."""
    client = script.registered_client
    if not isinstance(client, aioredis.Redis):
        # A cluster client refuses EVALSHA in a pipeline: one round trip each.
        return [await run_or_error(script, keys, args, run) for keys, args in calls]
    async with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            # On a pipeline the call is queued (and the script registered to load first).
            await script(keys=keys, args=args, client=pipe)
        replies: list[Any] = await run(pipe.execute(raise_on_error=False))
    return replies


class Coalesced:
    """One script's calls made in the same turn of the event loop, sent in one round trip (a
    pipeline, not a transaction) when there are several; a lone call goes as it is.

    A reconnect storm is hundreds of stream admissions a second, each one script call: alone,
    each paid redis-py's whole per-command path (a pooled connection taken and given back, the
    command packed, a read awaited), about 335 us of CPU per admission; a turn's admissions
    together cost about 120 us each (measured with 200 arriving at once). On a cluster client
    (no EVALSHA in a pipeline) every call goes alone. `run` bounds each round trip
    (EngineUnavailable when Redis does not answer). A caller that stops waiting does not stop
    its call: the script may still run (the caller's bookkeeping must allow for that)."""

    def __init__(self, script: Any, run: Run) -> None:
        self._script = script
        self._run = run
        self._queue: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        if not isinstance(self._script.registered_client, aioredis.Redis):
            return await self._run(self._script(keys=keys, args=args))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((keys, args, future))
        if len(self._queue) == 1:
            loop.call_soon(self._send_queued)  # (after the other callers of this turn)
        return await future

    def _send_queued(self) -> None:
        calls, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(calls))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        replies: list[Any]
        try:
            if len(calls) == 1:  # (alone: no pipeline, whose script check is a round trip)
                keys, args, _ = calls[0]
                replies = [await run_or_error(self._script, keys, args, self._run)]
            else:
                replies = await run_pipelined(
                    self._script, [(keys, args) for keys, args, _ in calls], self._run
                )
        except BaseException as exc:
            for *_, future in calls:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), reply in zip(calls, replies, strict=True):
            if future.done():
                continue  # (its caller left)
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
