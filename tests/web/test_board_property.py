"""Properties of the board through the API, on both engines: whatever matches are played, the
board is the players sorted by rating (descending, ties by player id ascending: the documented
tie order), it equals SQL, and the ratings always sum to 1200 per player."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..helpers import Api, board_matches_sql, sql_players

PLAYERS = [f"p{i}" for i in range(7)]
# (player, opponent, outcome for the first): win, draw or loss
match = st.tuples(
    st.sampled_from(PLAYERS), st.sampled_from(PLAYERS), st.sampled_from(["win", "draw", "loss"])
).filter(lambda m: m[0] != m[1])
numbers = itertools.count()


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(match, min_size=1, max_size=8))
async def test_board_is_always_sorted_by_rating_then_id(
    api: Api, played: list[tuple[str, str, str]]
) -> None:
    # One app for the whole test: the examples keep playing on the same board, so the
    # property is checked on ever longer histories (and on many ties: everyone starts at 1200).
    for a, b, outcome in played:
        match_id = f"m{next(numbers)}"
        winner = {"win": a, "loss": b, "draw": None}[outcome]
        await api.play(match_id, a, b, winner)

    entries = []
    offset = 0
    while True:  # page through the board as a client would
        page = (await api.get(f"/api/leaderboard?offset={offset}&limit=3")).body
        entries += page["entries"]
        offset += 3
        if offset >= page["total"]:
            break
    assert [e["rank"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries == sorted(entries, key=lambda e: (-e["rating"], e["player_id"]))

    rows = await sql_players(api.rt.store)
    assert {e["player_id"]: e["rating"] for e in entries} == {
        pid: row["rating"] for pid, row in rows.items()
    }
    assert sum(round(row["rating"] * 100) for row in rows.values()) == 1200 * 100 * len(rows)
    assert sum(row["wins"] for row in rows.values()) == sum(row["losses"] for row in rows.values())
    assert await board_matches_sql(api.rt)
    # each player's own view agrees with the page
    for entry in entries:
        player = (await api.get(f"/api/players/{entry['player_id']}")).body
        assert (player["rank"], player["rating"]) == (entry["rank"], entry["rating"])
