"""ELO against values computed by hand, and the properties every sequence of matches keeps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quart_app.domain import elo

WIN, DRAW, LOSS = 1.0, 0.5, 0.0


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        # Equal ratings: E = 1 / (1 + 10^0) = 0.5, so K * (S - E) = 32 * (+-0.5) = +-16, or 0.
        (WIN, (1516.0, 1484.0, 16.0)),
        (DRAW, (1500.0, 1500.0, 0.0)),
        (LOSS, (1484.0, 1516.0, -16.0)),
    ],
)
def test_equal_ratings_move_by_half_of_k(
    score: float, expected: tuple[float, float, float]
) -> None:
    assert elo.apply_result(1500, 1500, score, 32) == expected


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        # 1400 vs 1200: E(A) = 1 / (1 + 10^((1200 - 1400) / 400)) = 1 / (1 + 10^-0.5)
        #             = 1 / (1 + 0.3162278) = 0.7597469
        # win:  32 * (1   - 0.7597469) = +7.688099  -> +7.69:  1407.69 / 1192.31
        (WIN, (1407.69, 1192.31, 7.69)),
        # draw: 32 * (0.5 - 0.7597469) = -8.311902  -> -8.31:  1391.69 / 1208.31
        (DRAW, (1391.69, 1208.31, -8.31)),
        # loss: 32 * (0   - 0.7597469) = -24.311902 -> -24.31: 1375.69 / 1224.31
        (LOSS, (1375.69, 1224.31, -24.31)),
    ],
)
def test_favourite_against_underdog(score: float, expected: tuple[float, float, float]) -> None:
    assert elo.apply_result(1400, 1200, score, 32) == expected


def test_underdog_side_mirrors_the_favourite() -> None:
    # The 1200 player beating the 1400 player gains what the 1400 player loses: 24.31.
    assert elo.apply_result(1200, 1400, WIN, 32) == (1224.31, 1375.69, 24.31)
    assert elo.expected_score(1400, 1200) + elo.expected_score(1200, 1400) == pytest.approx(1.0)


def test_k_scales_the_change() -> None:
    assert elo.rating_delta(1500, 1500, WIN, 16) == 8.0
    assert elo.rating_delta(1500, 1500, WIN, 40) == 20.0


@pytest.mark.parametrize("score", [-1.0, 0.25, 2.0])
def test_only_win_draw_or_loss_is_a_score(score: float) -> None:
    with pytest.raises(ValueError, match="score_a"):
        elo.rating_delta(1500, 1500, score, 32)


def cents(ratings: list[float]) -> int:
    return sum(round(rating * 100) for rating in ratings)


matches = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 5), st.sampled_from([WIN, DRAW, LOSS])).filter(
        lambda m: m[0] != m[1]
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(matches, st.sampled_from([16.0, 32.0, 40.0]))
def test_a_sequence_of_matches_keeps_the_sum_of_ratings(
    played: list[tuple[int, int, float]], k: float
) -> None:
    ratings = [1200.0] * 6
    for a, b, score in played:
        ratings[a], ratings[b], delta = elo.apply_result(ratings[a], ratings[b], score, k)
        # Ratings stay in hundredths, and one match moves them by at most K.
        assert abs(delta) <= k
        assert ratings[a] == round(ratings[a], 2) and ratings[b] == round(ratings[b], 2)
    assert cents(ratings) == 6 * 1200 * 100


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 3000).map(lambda r: round(r, 2)), st.floats(0, 3000).map(lambda r: round(r, 2)))
def test_winner_never_loses_points_and_loser_never_gains(a: float, b: float) -> None:
    win_a, win_b, delta = elo.apply_result(a, b, WIN, 32)
    assert delta >= 0 and win_a >= a and win_b <= b
    loss_a, loss_b, delta = elo.apply_result(a, b, LOSS, 32)
    assert delta <= 0 and loss_a <= a and loss_b >= b
