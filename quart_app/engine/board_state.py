"""Whether the engine's board may be served, and how a rebuilt board is announced.

The engine's board is derived from SQL. After Redis lost its data, writes refill it one row at
a time: until a rebuild has swapped in the whole board, it is partial, and reads must come
from SQL instead (BoardIncomplete says so). A finished rebuild appends `BOARD_REBUILT` to the
log: an event of no room (no client ever receives it), which every instance's hub sees in
order, and answers with a fresh `leaderboard:initial` for its board watchers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..domain.board import BoardEntry, Ranked
from ..domain.publication import Draft

BOARD_REBUILT = "board:rebuilt"

# Reads the whole board from the truth (SQL), when a rebuild is ready for it.
BoardLoader = Callable[[], Awaitable[list[BoardEntry]]]

# (offset, limit) -> (ranked entries, total): a page of the board, wherever it is read from.
BoardReader = Callable[[int, int], Awaitable[tuple[list[Ranked], int]]]


class BoardIncomplete(Exception):
    """The engine's board is not known to be whole (Redis lost its data and the rebuild has
    not swapped the board in yet): read the board from SQL."""


def rebuilt_marker() -> Draft:
    return Draft((), BOARD_REBUILT, {})
