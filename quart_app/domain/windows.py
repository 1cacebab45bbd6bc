"""Rank windows (PROTOCOL 1): the rooms `leaderboard:top:{n}` and
`leaderboard:around:{player_id}:{radius}`, and which of them a board change touches.

Pure: no I/O. The live part (reading windows, coalescing, pushing) is engine/windows.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .ids import is_valid_id

TOP_PREFIX = "leaderboard:top:"
AROUND_PREFIX = "leaderboard:around:"
MAX_TOP = 100
MAX_RADIUS = 25

# A rank range open at the bottom: a newcomer shifts everyone below it.
BOTTOM = math.inf


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """What a window room shows: the top `size` (player_id None), or `player_id` and `size`
    neighbours on each side."""

    room: str
    size: int
    player_id: str | None = None

    @property
    def capacity(self) -> int:
        """The number of entries when the window is not clipped by an end of the board."""
        return self.size if self.player_id is None else 2 * self.size + 1


@dataclass(frozen=True, slots=True)
class RankMove:
    """One row of a `leaderboard:update`: a player's rank before (None: new on the board)
    and after (None: gone from it)."""

    player_id: str
    rank: int | None
    previous_rank: int | None

    def shifted(self) -> tuple[float, float]:
        """The ranks whose occupant may differ because of this move: from the higher of the
        two positions to the lower (ranks in between shift by one); open-ended for a
        newcomer or a leaver, who shift everyone below them. A rename (same rank) is that
        one rank."""
        known = [r for r in (self.rank, self.previous_rank) if r is not None]
        if not known:
            return (BOTTOM, BOTTOM)
        low, high = float(min(known)), float(max(known))
        if self.rank is None or self.previous_rank is None:
            high = BOTTOM
        return (low, high)


def parse_window(room: str) -> WindowSpec | None:
    """The window a room name names; None when it is not a window room at all. ValueError
    when it looks like one but is out of range or malformed (a 400 at the edge)."""
    if room.startswith(TOP_PREFIX):
        size = _bounded_int(room[len(TOP_PREFIX) :], MAX_TOP)
        return WindowSpec(room, size)
    if room.startswith(AROUND_PREFIX):
        player_id, sep, radius = room[len(AROUND_PREFIX) :].rpartition(":")
        if not sep or not is_valid_id(player_id):
            raise ValueError(room)
        return WindowSpec(room, _bounded_int(radius, MAX_RADIUS), player_id)
    return None


def is_window_room(room: str) -> bool:
    return room.startswith(TOP_PREFIX) or room.startswith(AROUND_PREFIX)


def _bounded_int(text: str, maximum: int) -> int:
    # Digits only: int() would also take " 5", "+5", "٥" and "1_0", which are other names.
    if not text.isascii() or not text.isdigit() or len(text) > 3 or text.startswith("0"):
        raise ValueError(text)
    value = int(text)
    if not 1 <= value <= maximum:
        raise ValueError(text)
    return value


def rank_moves(data: dict[str, Any]) -> list[RankMove]:
    """The rows of a `leaderboard:update` event's data."""
    moves = []
    for change in data.get("changes", ()):
        moves.append(RankMove(change["player_id"], change.get("rank"), change.get("previous_rank")))
    return moves


def covered_ranks(spec: WindowSpec, entries: list[dict[str, Any]]) -> tuple[float, float] | None:
    """The ranks a window shows now, open at the bottom when it is clipped by the board's end
    (a newcomer there would join it). None for an around-window of a player not on the
    board (only that player's arrival changes it)."""
    if spec.player_id is None:
        high: float = spec.size if len(entries) >= spec.size else BOTTOM
        return (1.0, high)
    if not entries:
        return None
    low, high = float(entries[0]["rank"]), float(entries[-1]["rank"])
    if len(entries) < spec.capacity:
        high = BOTTOM  # near an end: the window grows as the board does
    return (low, high)


@dataclass(frozen=True, slots=True)
class BoardChange:
    """The moves of one `leaderboard:update`, prepared once for checking every window."""

    spans: tuple[tuple[float, float], ...]
    players: frozenset[str]

    @classmethod
    def of(cls, moves: list[RankMove]) -> BoardChange:
        return cls(tuple(m.shifted() for m in moves), frozenset(m.player_id for m in moves))


def touches(spec: WindowSpec, covered: tuple[float, float] | None, moves: list[RankMove]) -> bool:
    """Whether these moves may change the window that covers `covered` (see covered_ranks)."""
    return change_touches(spec, covered, BoardChange.of(moves))


def change_touches(
    spec: WindowSpec, covered: tuple[float, float] | None, change: BoardChange
) -> bool:
    """`touches`, for a change prepared once (checked against every window of an instance)."""
    if spec.player_id is not None and spec.player_id in change.players:
        return True
    if covered is None:
        return False
    first, last = covered
    return any(low <= last and first <= high for low, high in change.spans)
