"""Leaderboard reads, served from the engine (which the outbox keeps equal to SQL), or from SQL
while the engine's board is incomplete (Redis lost its data, the rebuild is not done)."""

from __future__ import annotations

import json
from typing import Any

from ..domain.board import Ranked
from ..engine.base import Engine
from ..engine.board_state import BoardIncomplete
from ..engine.cursor import encode
from ..store import board_reads
from ..store.database import Store
from .errors import NotFound


def entries(ranked: list[Ranked]) -> list[dict[str, Any]]:
    return [entry.as_entry(rank) for rank, entry in ranked]


class LeaderboardService:
    def __init__(self, engine: Engine, store: Store) -> None:
        self.engine = engine
        self.store = store

    # the board, wherever it is whole ------------------------------------------------------------
    async def board_page(self, offset: int, limit: int) -> tuple[list[Ranked], int]:
        """Also the hub's reader for `leaderboard:initial` snapshots."""
        try:
            return await self.engine.board_page(offset, limit)
        except BoardIncomplete:
            return await board_reads.page(self.store, offset, limit)

    async def board_player(self, player_id: str) -> Ranked | None:
        try:
            return await self.engine.board_player(player_id)
        except BoardIncomplete:
            return await board_reads.player(self.store, player_id)

    async def board_around(self, player_id: str, radius: int) -> list[Ranked]:
        try:
            return await self.engine.board_around(player_id, radius)
        except BoardIncomplete:
            return await board_reads.around(self.store, player_id, radius)

    # the API's reads ----------------------------------------------------------------------------
    async def page(self, offset: int, limit: int) -> str:
        """The answer of GET /api/leaderboard as JSON text: the engine hands over the entries
        already encoded (board_page_json), and they go out as they are."""
        # The cursor's position is read with the page or before it: events after it may
        # already be reflected in the page, never the other way round, so a client that
        # resumes from it misses nothing.
        try:
            head, rows, total = await self.engine.board_page_json(offset, limit)
        except BoardIncomplete:
            head = await self.engine.head()
            ranked, total = await board_reads.page(self.store, offset, limit)
            rows = json.dumps(entries(ranked))
        cursor = encode(self.engine.epoch, head)
        return f'{{"entries":{rows},"total":{total},"cursor":{json.dumps(cursor)}}}'

    async def player(self, player_id: str) -> dict[str, Any]:
        found = await self.board_player(player_id)
        if found is None:
            raise NotFound(f"no player {player_id!r}")
        rank, entry = found
        return {
            **entry.as_entry(rank),
            "games": entry.games,
            "online": await self.engine.is_online(player_id),
        }

    async def around(self, player_id: str, radius: int) -> dict[str, Any]:
        ranked = await self.board_around(player_id, radius)
        if not ranked:
            raise NotFound(f"no player {player_id!r}")
        return {"entries": entries(ranked)}
