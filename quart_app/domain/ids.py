"""Identifier and room-name rules shared by every layer."""

from __future__ import annotations

import re

# Ids travel inside room names and comma-separated query strings: keep them to a safe alphabet
# so no id can forge another room or break a list.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_ID = re.compile(ID_PATTERN)

GLOBAL_BOARD = "leaderboard:global"
MATCHES = "matches"
PRESENCE = "presence"
PUBLIC_ROOMS = frozenset({GLOBAL_BOARD, MATCHES, PRESENCE})
WINDOW_PREFIXES = ("leaderboard:top:", "leaderboard:around:")


class UnknownRoom(ValueError):
    """The name is not one of the rooms of the protocol."""


def is_valid_id(value: str) -> bool:
    return bool(_ID.fullmatch(value))  # match() would let "$" accept a trailing newline


def match_room(match_id: str) -> str:
    return f"match:{match_id}"


def player_room(player_id: str) -> str:
    return f"player:{player_id}"


def room_owner(room: str) -> str | None:
    """The player a private room belongs to, None for a public room; UnknownRoom if invalid."""
    if room in PUBLIC_ROOMS:
        return None
    if room.startswith(WINDOW_PREFIXES):  # rank windows: public, like the board they show
        from .windows import parse_window  # (windows.py imports this module)

        try:
            parse_window(room)
        except ValueError:
            raise UnknownRoom(room) from None
        return None
    kind, sep, ident = room.partition(":")
    if sep and is_valid_id(ident):
        if kind == "match":
            return None
        if kind == "player":
            return ident
    raise UnknownRoom(room)


def parse_rooms(raw: str | list[str] | None) -> list[str]:
    """Comma-separated or listed room names, validated, without duplicates, order kept."""
    if raw is None:
        return []
    names = raw.split(",") if isinstance(raw, str) else raw
    rooms: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise UnknownRoom(repr(name))
        name = name.strip()
        if not name:
            continue
        room_owner(name)
        if name not in rooms:
            rooms.append(name)
    return rooms
