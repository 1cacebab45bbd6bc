"""Issue 7 item 5 in the browser: an older change row that arrives after a newer one (events of
two instances reaching the log out of commit order) never replaces the newer row, neither in
what PulseClient hands the app nor on the page's board."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .conftest import OpenPage
from .helpers import Api, unique
from .test_board_page import expect_open, row

pytestmark = pytest.mark.browser


def update(player: str, rating: float, version: int) -> dict[str, Any]:
    """A leaderboard:update envelope as the server sends it (no id: a test feed, no cursor)."""
    change = {
        "rank": 1,
        "player_id": player,
        "name": player,
        "rating": rating,
        "wins": 1,
        "losses": 0,
        "draws": 0,
        "previous_rank": 2,
        "delta": 1.0,
        "version": version,
    }
    return {
        "id": None,
        "rooms": ["leaderboard:global"],
        "event": "leaderboard:update",
        "data": {"match_id": None, "changes": [change]},
        "ts": 0,
    }


def shown_rating(page: Page, player: str) -> float:
    return float(page.evaluate("p => window.pulseApp.board.entries.get(p).rating", player))


def test_an_older_row_after_a_newer_one_is_ignored(api: Api, open_page: OpenPage) -> None:
    winner, loser = unique("w"), unique("l")
    api.play(winner, loser)
    page = open_page(player=unique("viewer"), top="1000")
    expect_open(page, "sse")
    expect(row(page, winner)).to_have_count(1)

    # Through the client, as the stream would deliver them: newer first, then older.
    handed = page.evaluate(
        """([newer, older]) => {
            const client = window.pulseApp.client;
            const seen = [];
            client.on('leaderboard:update', (d) => seen.push(d.changes.map((c) => c.version)));
            client._deliver(newer);
            client._deliver(older);
            return seen;
        }""",
        [update(winner, 1900.0, 100), update(winner, 1300.0, 99)],
    )
    assert handed == [[100], []]  # the older row is not handed to the app
    assert shown_rating(page, winner) == 1900.0
    expect(row(page, winner)).to_have_attribute("data-rank", "1")

    # The page's own model keeps the highest version too (rows it gets by any other path).
    page.evaluate("u => window.pulseApp.onUpdate(u.data)", update(winner, 1250.0, 98))
    assert shown_rating(page, winner) == 1900.0
    page.evaluate("u => window.pulseApp.onUpdate(u.data)", update(winner, 1950.0, 101))
    assert shown_rating(page, winner) == 1950.0
