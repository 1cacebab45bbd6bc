"""How matches and board changes look on the wire (PROTOCOL 2 and 4): the JSON of a match,
of a completed match, the rooms a match's events go to, and the rows of `leaderboard:update`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..domain.board import BoardEntry
from ..domain.ids import MATCHES, match_room, player_room
from ..domain.publication import RankSlot


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def match_json(row: Any) -> dict[str, Any]:
    return {
        "match_id": row.match_id,
        "player_ids": [row.player_a, row.player_b],
        "status": row.status,
        "winner_id": row.winner_id,
        "draw": bool(row.draw),
        "created_at": row.created_at,
        "started_at": row.started_at,
        "completed_at": row.completed_at,
        "scheduled_at": row.scheduled_at,
    }


def result_json(row: Any) -> dict[str, Any]:
    body = match_json(row)
    body["rating_changes"] = {row.player_a: row.rating_change_a, row.player_b: row.rating_change_b}
    return body


def match_rooms(row: Any) -> tuple[str, ...]:
    return (MATCHES, match_room(row.match_id), player_room(row.player_a), player_room(row.player_b))


def change_row(entry: BoardEntry, delta: float) -> dict[str, Any]:
    """A row of `leaderboard:update` (PROTOCOL 2). `rank` and `previous_rank` are left for
    the engine to fill (see change_slots; a newcomer's previous_rank stays null).
    `version` is the player's row version: events of two instances may reach the log out of
    commit order, and a client keeps, per player, the row with the highest version."""
    return {
        **entry.as_entry(0),
        "previous_rank": None,
        "delta": delta,
        "version": entry.version,
    }


def change_slots(index: int, player_id: str, previous_rank: bool) -> list[RankSlot]:
    """Where the engine puts the ranks of change row `index` (PROTOCOL 2: the rank right
    after the event; previous_rank: before the publication's rows applied)."""
    slots = [RankSlot(("changes", index, "rank"), player_id, "after")]
    if previous_rank:
        slots.append(RankSlot(("changes", index, "previous_rank"), player_id, "before"))
    return slots
