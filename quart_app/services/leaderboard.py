"""Leaderboard reads, served from the engine (which the outbox keeps equal to SQL)."""

from __future__ import annotations

from typing import Any

from ..engine.base import Engine, Ranked
from ..engine.cursor import encode
from .errors import NotFound


def entries(ranked: list[Ranked]) -> list[dict[str, Any]]:
    return [entry.as_entry(rank) for rank, entry in ranked]


class LeaderboardService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def page(self, offset: int, limit: int) -> dict[str, Any]:
        # The cursor is read first: events after it may already be reflected in the page,
        # never the other way round, so a client that resumes from it misses nothing.
        cursor = encode(self.engine.epoch, await self.engine.head())
        ranked, total = await self.engine.board_page(offset, limit)
        return {"entries": entries(ranked), "total": total, "cursor": cursor}

    async def player(self, player_id: str) -> dict[str, Any]:
        found = await self.engine.board_player(player_id)
        if found is None:
            raise NotFound(f"no player {player_id!r}")
        rank, entry = found
        return {
            **entry.as_entry(rank),
            "games": entry.games,
            "online": await self.engine.is_online(player_id),
        }

    async def around(self, player_id: str, radius: int) -> dict[str, Any]:
        ranked = await self.engine.board_around(player_id, radius)
        if not ranked:
            raise NotFound(f"no player {player_id!r}")
        return {"entries": entries(ranked)}
