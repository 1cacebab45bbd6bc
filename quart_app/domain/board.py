"""A player's row on the board, and the order of the board."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BoardEntry:
    """A player's row on the board, absolute (not a delta) and versioned, so applying an
    older row after a newer one, or the same row twice, changes nothing."""

    player_id: str
    name: str
    rating: float
    wins: int
    losses: int
    draws: int
    games: int
    version: int

    def to_json(self) -> str:
        return json.dumps(self.as_row(), separators=(",", ":"))

    def as_row(self) -> dict[str, Any]:
        """Every field by name (what dataclasses.asdict gives, without its deep copy of
        values that are all scalars: it was a measurable part of a result's CPU)."""
        return {
            "player_id": self.player_id,
            "name": self.name,
            "rating": self.rating,
            "wins": self.wins,
            "losses": self.losses,
            "draws": self.draws,
            "games": self.games,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, text: str | bytes) -> BoardEntry:
        return cls(**json.loads(text))

    def as_entry(self, rank: int) -> dict[str, Any]:
        return {
            "rank": rank,
            "player_id": self.player_id,
            "name": self.name,
            "rating": self.rating,
            "wins": self.wins,
            "losses": self.losses,
            "draws": self.draws,
        }


Ranked = tuple[int, BoardEntry]


def board_order(rating: float, player_id: str) -> tuple[float, str]:
    """The board's sort key: rating descending, then player id ascending (the documented
    tie order; the Redis board gets the same from score -rating and member order)."""
    return (-rating, player_id)
