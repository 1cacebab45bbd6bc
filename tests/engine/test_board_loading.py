"""The memory engine's bulk board load (issue 8): rows sorted by two single-key sorts and cut
straight into a SortedList give the board order and a valid order-statistic list; a board
still pending answers BoardIncomplete and holds ranked publications until it is loaded."""

from __future__ import annotations

import asyncio
import random

import pytest

from quart_app.domain.board import BoardEntry
from quart_app.domain.publication import Publication
from quart_app.engine.board_state import (
    BoardIncomplete,
    BoardRows,
    board_row,
    row_entry,
    row_json,
)
from quart_app.engine.memory import MemoryEngine, _board_ordered, _sorted_list


def random_rows(count: int, seed: int) -> list[tuple[float, str, str, int, int, int, int, int]]:
    rng = random.Random(seed)
    # few distinct ratings: long runs of ties, ordered by id
    return [
        board_row(
            BoardEntry(
                f"p{rng.randrange(10**9):09d}-{i}",
                "n",
                rng.choice([1000.0, 1200.5, 999.25]),
                0,
                0,
                0,
                0,
                1,
            )
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("count", [0, 1, 999, 1000, 1001, 25_000])
def test_two_sorts_and_the_direct_cut_give_the_board_order(count: int) -> None:
    rows = random_rows(count, count)
    expected = sorted(rows, key=lambda row: (-row_entry(row).rating, row[1]))
    ordered = _board_ordered(list(rows))
    assert ordered == expected
    order = _sorted_list(ordered)
    order._check()  # sortedcontainers' own invariants
    assert list(order) == expected
    if rows:
        order.add(rows[0])
        order.remove(rows[0])
        order._check()
        assert order.bisect_left(expected[count // 2]) == count // 2


def test_row_json_is_the_entry_json() -> None:
    for entry in [
        BoardEntry('q"uote\\', "Zoë \n 😀", 1234.5, 1, 2, 3, 6, 7),
        BoardEntry("x", "y", 0.1 + 0.2, 0, 0, 0, 0, 1),
        BoardEntry("x", "y", 1000.0, 0, 0, 0, 0, 1),
    ]:
        assert row_json(board_row(entry)) == entry.to_json()
        assert row_entry(board_row(entry)) == entry


async def test_a_pending_board_reads_incomplete_and_holds_ranked_publications() -> None:
    engine = MemoryEngine(board_pending=True)
    with pytest.raises(BoardIncomplete):
        await engine.board_page(0, 10)
    with pytest.raises(BoardIncomplete):
        await engine.board_player("a")
    loaded = asyncio.Event()

    async def load() -> BoardRows:
        await loaded.wait()
        return BoardRows([board_row(BoardEntry("a", "A", 1100.0, 0, 0, 0, 0, 1))])

    replacing = asyncio.create_task(engine.board_replace(load))
    newer = BoardEntry("b", "B", 1200.0, 1, 0, 0, 1, 2)
    publishing = asyncio.create_task(engine.publish(Publication(board=(newer,))))
    await asyncio.sleep(0.05)
    assert not publishing.done()  # held: there is no whole board to rank it on
    loaded.set()
    await asyncio.wait_for(asyncio.gather(replacing, publishing), 10)
    ranked, total = await engine.board_page(0, 10)
    assert total == 2 and [entry.player_id for _, entry in ranked] == ["b", "a"]
