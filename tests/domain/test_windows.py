"""Which windows a board change touches (domain/windows.py): pure, from the rank and
previous_rank rows of a leaderboard:update alone."""

from __future__ import annotations

import pytest

from quart_app.domain.windows import (
    RankMove,
    WindowSpec,
    covered_ranks,
    parse_window,
    rank_moves,
    touches,
)


def entries(*ranks: int) -> list[dict[str, object]]:
    return [{"rank": rank, "player_id": f"p{rank}"} for rank in ranks]


def test_parse_window_rooms() -> None:
    assert parse_window("leaderboard:top:10") == WindowSpec("leaderboard:top:10", 10)
    assert parse_window("leaderboard:around:ann.b:25") == WindowSpec(
        "leaderboard:around:ann.b:25", 25, "ann.b"
    )
    assert parse_window("leaderboard:global") is None
    for bad in ("leaderboard:top:0", "leaderboard:top:+5", "leaderboard:top:1_0"):
        with pytest.raises(ValueError):
            parse_window(bad)


TOP3 = WindowSpec("leaderboard:top:3", 3)
AROUND = WindowSpec("leaderboard:around:p10:2", 2, "p10")


@pytest.mark.parametrize(
    ("spec", "shown", "move", "touched"),
    [
        (TOP3, entries(1, 2, 3), RankMove("x", 5, 9), False),  # below the top 3
        (TOP3, entries(1, 2, 3), RankMove("x", 3, 4), True),  # enters at the edge
        (TOP3, entries(1, 2, 3), RankMove("x", 4, 3), True),  # leaves from the edge
        (TOP3, entries(1, 2, 3), RankMove("x", 2, 2), True),  # rating or name of a member
        (TOP3, entries(1, 2, 3), RankMove("new", 7, None), False),  # newcomer below
        (TOP3, entries(1, 2), RankMove("new", 3, None), True),  # a short board grows
        (AROUND, entries(8, 9, 10, 11, 12), RankMove("x", 1, 2), False),  # above
        (AROUND, entries(8, 9, 10, 11, 12), RankMove("x", 13, 40), False),  # below
        (AROUND, entries(8, 9, 10, 11, 12), RankMove("x", 3, 30), True),  # crosses: shifts
        (AROUND, entries(8, 9, 10, 11, 12), RankMove("x", 12, 20), True),  # enters the edge
        (AROUND, entries(8, 9, 10, 11, 12), RankMove("new", 5, None), True),  # shifts all
        (AROUND, entries(8, 9, 10, 11, 12), RankMove("p10", 10, 10), True),  # the centre
        (AROUND, [], RankMove("x", 1, 2), False),  # centre not on the board
        (AROUND, [], RankMove("p10", 50, None), True),  # ...until it arrives
    ],
)
def test_touches(
    spec: WindowSpec, shown: list[dict[str, object]], move: RankMove, touched: bool
) -> None:
    assert touches(spec, covered_ranks(spec, shown), [move]) is touched


def test_rank_moves_from_update_data() -> None:
    data = {"changes": [{"player_id": "a", "rank": 1, "previous_rank": None, "delta": 0.0}]}
    assert rank_moves(data) == [RankMove("a", 1, None)]
