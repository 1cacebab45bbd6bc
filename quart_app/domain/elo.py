"""ELO ratings: zero-sum per match, rounded to hundredths."""

from __future__ import annotations


def expected_score(rating: float, opponent: float) -> float:
    """Probability that a player rated `rating` beats one rated `opponent`."""
    odds: float = 10.0 ** ((opponent - rating) / 400.0)
    return 1.0 / (1.0 + odds)


def rating_delta(rating_a: float, rating_b: float, score_a: float, k: float) -> float:
    """Points player A gains (B loses exactly as many): score_a is 1 win, 0.5 draw, 0 loss.

    The delta is rounded once and applied with opposite signs, so the sum of all ratings
    never drifts.
    """
    if score_a not in (0.0, 0.5, 1.0):
        raise ValueError("score_a must be 0, 0.5 or 1")
    return round(k * (score_a - expected_score(rating_a, rating_b)), 2)


def apply_result(
    rating_a: float, rating_b: float, score_a: float, k: float
) -> tuple[float, float, float]:
    """New ratings of A and B and A's delta."""
    delta = rating_delta(rating_a, rating_b, score_a, k)
    return round(rating_a + delta, 2), round(rating_b - delta, 2), delta
