"""The board in Redis: page, player, around, and the whole-board rebuild.

Keys: ``board`` / ``players`` / ``versions`` (zset player -> -rating; hash player -> BoardEntry
JSON; hash player -> version, the order-independence guard), ``board:rebuild`` and
``board:next:*`` (a running `replace`: its token, and the board it builds), ``board:ready``
(set by the swap of a rebuild: the board is whole. A data loss removes it, and the reads then
answer "incomplete" (BoardIncomplete: the caller reads SQL) until a rebuild ends).

Rows are written by the publish script (log.py), with the log entries of the same result.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from ..base import BoardEntry, Ranked
from ..board_state import BoardIncomplete, BoardLoader, BoardRow, loaded_rows, row_json
from .keys import RedisKeys
from .log import RedisLog, new_token
from .scripts import Scripts

# Rows per board_stage call: its ZADD and HSETs take 2 arguments a row, and Lua's unpack()
# takes about 8,000 at most.
_STAGE_BATCH = 2000
# A running rebuild's marker lives this long unless renewed (every third of it).
REBUILD_TTL_MS = 30_000


class RedisBoard:
    def __init__(self, scripts: Scripts, keys: RedisKeys) -> None:
        self._scripts = scripts
        self._keys = keys
        self.rebuild_ttl_ms = REBUILD_TTL_MS

    @staticmethod
    def _rows(rows: Sequence[str | None], first_rank: int) -> list[Ranked]:
        return [(first_rank + i, BoardEntry.from_json(row)) for i, row in enumerate(rows) if row]

    async def _read(self, script: str, args: list[Any]) -> Any:
        reply = await self._scripts.run(script, self._keys.board_read, args)
        if reply == "incomplete":
            raise BoardIncomplete("the board has not been rebuilt since Redis lost its data")
        return reply

    async def page(self, offset: int, limit: int) -> tuple[list[Ranked], int]:
        offset = max(0, offset)
        reply = await self._read("board_page", [offset, max(1, limit)])
        rows = reply[1:] if limit > 0 else []
        return self._rows(rows, offset + 1), int(reply[0])

    async def page_json(self, offset: int, limit: int, log: RedisLog) -> tuple[int, str, int]:
        """(the log's head, the page as the API's JSON array of entries, the number of
        players), in one script (board_page_json.lua): the entries are cut out of the stored
        rows there, so the reply is one string instead of 100, no row is decoded and encoded
        again in Python (together about two thirds of a page read's time), and the head is
        read in the same round trip, atomically with the page."""
        offset = max(0, offset)
        keys = [*self._keys.log, *self._keys.board_read]
        args = [*log.script_args(), offset, max(1, limit)]
        reply = await self._scripts.run("board_page_json", keys, args)
        epoch, head = reply[0], int(reply[1])
        log.saw_epoch(epoch, head)
        if reply[2] == "incomplete":
            raise BoardIncomplete("the board has not been rebuilt since Redis lost its data")
        return head, (reply[3] if limit > 0 else "[]"), int(reply[2])

    async def player(self, player_id: str) -> Ranked | None:
        reply = await self._read("board_player", [player_id])
        if not reply or not reply[1]:
            return None
        return int(reply[0]) + 1, BoardEntry.from_json(reply[1])

    async def around(self, player_id: str, radius: int) -> list[Ranked]:
        reply = await self._read("board_around", [player_id, radius])
        if not reply:
            return []
        return self._rows(reply[1:], int(reply[0]) + 1)

    async def replace(self, load: BoardLoader, *, take_over: bool = True) -> bool:
        """Build the new board in ``board:next:*``, then rename it over the live one and mark
        it complete in one script: readers see the old or the new. The marker is set before
        `load()` reads the truth, so every row published after that read (its commit came
        later) goes into the new board too.

        While another rebuild runs (its marker is alive), `take_over=False` starts nothing
        and returns False: instances that find the board missing together build it once.
        The marker lives `rebuild_ttl_ms` and is renewed while this rebuild runs, so a
        rebuilder that died holds the others back only that long."""
        token = new_token()
        marker = self._keys.board_next
        mode = "take-over" if take_over else "unless-running"
        begun = await self._scripts.run("board_begin", marker, [token, self.rebuild_ttl_ms, mode])
        if begun == -1:
            return False
        keeper = asyncio.create_task(self._keep_marker(token))
        try:
            await self._build_and_swap(token, load)
        finally:
            keeper.cancel()
            with contextlib.suppress(BaseException):
                await keeper
        return True

    async def _keep_marker(self, token: str) -> None:
        while True:
            await asyncio.sleep(self.rebuild_ttl_ms / 3000)
            with contextlib.suppress(Exception):  # a failed renewal: the next step reports it
                if (
                    await self._scripts.run(
                        "board_keep", self._keys.board_next[:1], [token, self.rebuild_ttl_ms]
                    )
                    != 1
                ):
                    return

    async def _build_and_swap(self, token: str, load: BoardLoader) -> None:
        marker = self._keys.board_next
        rows = loaded_rows(await load())
        # One batch in flight while the next is encoded: Redis works as Python encodes.
        in_flight: asyncio.Future[Any] | None = None
        try:
            for i in range(0, len(rows), _STAGE_BATCH):
                args = _stage_args(token, rows[i : i + _STAGE_BATCH])
                if in_flight is not None:
                    self._rebuild_status(await in_flight)
                in_flight = asyncio.ensure_future(self._scripts.run("board_stage", marker, args))
            if in_flight is not None:
                self._rebuild_status(await in_flight)
        finally:
            if in_flight is not None and not in_flight.done():
                in_flight.cancel()
                with contextlib.suppress(BaseException):
                    await in_flight
        retired = [key + ":retired" for key in self._keys.board]  # see board_swap.lua
        swap_keys = [marker[0], *self._keys.board, *marker[1:], self._keys.board_ready, *retired]
        self._rebuild_status(await self._scripts.run("board_swap", swap_keys, [token]))

    @staticmethod
    def _rebuild_status(status: int) -> None:
        if status == 0:
            raise RuntimeError("board rebuild interrupted: its marker is gone (Redis data loss?)")
        if status == -1:
            raise RuntimeError("board rebuild superseded by another one")


def _stage_args(token: str, rows: Sequence[BoardRow]) -> list[Any]:
    """board_stage's ARGV: the token, then the rows' ids, versions, scores (-rating, repr:
    exact) and JSONs, each list joined by newlines."""
    ids = "\n".join([row[1] for row in rows])
    if ids.count("\n") != len(rows) - 1:
        raise ValueError("a player id holds a newline: not an id of domain/ids.py")
    return [
        token,
        ids,
        "\n".join([str(row[7]) for row in rows]),
        "\n".join([repr(row[0]) for row in rows]),
        "\n".join([row_json(row) for row in rows]),
    ]
