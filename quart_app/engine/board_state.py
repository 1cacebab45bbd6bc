"""Whether the engine's board may be served, and how a rebuilt board is announced.

The engine's board is derived from SQL. After Redis lost its data, writes refill it one row at
a time: until a rebuild has swapped in the whole board, it is partial, and reads must come
from SQL instead (BoardIncomplete says so). A finished rebuild appends `BOARD_REBUILT` to the
log: an event of no room (no client ever receives it), which every instance's hub sees in
order, and answers with a fresh `leaderboard:initial` for its board watchers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from json.encoder import encode_basestring_ascii as _json_string
from typing import overload

from ..domain.board import BoardEntry, Ranked
from ..domain.publication import Draft

BOARD_REBUILT = "board:rebuilt"

# A player's board row with its sort key first: (-rating, player_id, name, wins, losses,
# draws, games, version). Sorting such tuples gives the board order (domain.board_order), so
# a row is its own key in an order-statistic list, and SQL can hand rows over in this shape.
BoardRow = tuple[float, str, str, int, int, int, int, int]


def board_row(entry: BoardEntry) -> BoardRow:
    return (
        -entry.rating,
        entry.player_id,
        entry.name,
        entry.wins,
        entry.losses,
        entry.draws,
        entry.games,
        entry.version,
    )


def row_entry(row: BoardRow) -> BoardEntry:
    neg_rating, player_id, name, wins, losses, draws, games, version = row
    return BoardEntry(player_id, name, -neg_rating, wins, losses, draws, games, version)


def row_json(row: BoardRow) -> str:
    """BoardEntry.to_json() of the row, byte for byte, without making the entry (a rebuild
    writes one per player: asdict and json.dumps per row cost seconds at 1,000,000)."""
    neg_rating, player_id, name, wins, losses, draws, games, version = row
    return (
        f'{{"player_id":{_json_string(player_id)},"name":{_json_string(name)},'
        f'"rating":{-neg_rating!r},"wins":{wins},"losses":{losses},"draws":{draws},'
        f'"games":{games},"version":{version}}}'
    )


class BoardRows(Sequence[BoardEntry]):
    """The whole board as SQL returned it: raw rows, an entry made only when one is read.

    At 1,000,000 players, making a BoardEntry per row took longer (about 5 s here) than
    reading them; an engine that can take the rows as they are reads `.rows`."""

    def __init__(self, rows: list[BoardRow]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> BoardEntry: ...

    @overload
    def __getitem__(self, index: slice) -> list[BoardEntry]: ...

    def __getitem__(self, index: int | slice) -> BoardEntry | list[BoardEntry]:
        if isinstance(index, slice):
            return [row_entry(row) for row in self.rows[index]]
        return row_entry(self.rows[index])

    def __iter__(self) -> Iterator[BoardEntry]:
        return (row_entry(row) for row in self.rows)


def loaded_rows(loaded: Sequence[BoardEntry]) -> list[BoardRow]:
    """The rows of what a BoardLoader returned, without a round trip through BoardEntry."""
    if isinstance(loaded, BoardRows):
        return loaded.rows
    return [board_row(entry) for entry in loaded]


# Reads the whole board from the truth (SQL), when a rebuild is ready for it.
BoardLoader = Callable[[], Awaitable[Sequence[BoardEntry]]]

# (offset, limit) -> (ranked entries, total): a page of the board, wherever it is read from.
BoardReader = Callable[[int, int], Awaitable[tuple[list[Ranked], int]]]


class BoardIncomplete(Exception):
    """The engine's board is not known to be whole (Redis lost its data and the rebuild has
    not swapped the board in yet): read the board from SQL."""


def rebuilt_marker() -> Draft:
    return Draft((), BOARD_REBUILT, {})
