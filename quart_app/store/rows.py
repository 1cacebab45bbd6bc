"""Turning SQL rows into engine objects."""

from __future__ import annotations

from typing import Any

from ..domain.board import BoardEntry


def board_entry(row: Any) -> BoardEntry:
    return BoardEntry(
        player_id=row.player_id,
        name=row.name,
        rating=row.rating,
        wins=row.wins,
        losses=row.losses,
        draws=row.draws,
        games=row.games,
        version=row.version,
    )
