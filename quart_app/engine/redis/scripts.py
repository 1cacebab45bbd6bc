"""The Lua scripts (``engine/lua/*.lua``): every write of the Redis engine is one of them, so that
board rows, the seq, the log entry and the bus message of one publication happen together or
not at all. Loaded with ``register_script``: EVALSHA, and a reload on NOSCRIPT."""

from __future__ import annotations

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
