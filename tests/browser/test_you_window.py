"""The page's "You" panel follows the player's rank window (`leaderboard:around:{me}:5`) on
every transport: it shows what GET .../around?radius=5 gives, kept current by the pushed
windows alone (the page never reads /around itself)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, Request, expect

from .conftest import OpenPage
from .helpers import Api, unique
from .test_board_page import expect_open, expect_rows

pytestmark = pytest.mark.browser

BUDGET_MS = 5_000  # generous: the window itself is due within 100 ms of the result


def around(api: Api, me: str) -> list[list[str]]:
    body = api.get(f"/api/players/{me}/around?radius=5")
    return [[e["player_id"], str(e["rank"])] for e in body["entries"]]


@pytest.mark.parametrize("transport", ["sse", "websocket", "poll"])
def test_you_panel_follows_the_window_without_reading_around(
    transport: str, api: Api, open_page: OpenPage
) -> None:
    me, rival = unique("me"), unique("rival")
    players = [unique(f"p{i}") for i in range(6)]
    for winner, loser in zip(players[::2], players[1::2], strict=True):
        api.play(winner, loser)
    api.play(me, rival)  # me: one win (about 1216), among the winners
    reads: list[str] = []

    def watch(page: Page) -> None:
        page.on("request", lambda r: reads.append(r.url) if "/around" in _path(r) else None)

    page = open_page(player=me, transport=transport, route=watch)
    expect_open(page, transport, timeout=15_000)
    expect_rows(page, "#me-body", around(api, me), BUDGET_MS)
    status = page.locator("#me-status")
    expect(status).to_have_attribute("data-rank", str(api.rank(me)), timeout=BUDGET_MS)

    # Someone below passes us: our rank and neighbours change though no event names us.
    climber = players[1]  # a loser at about 1184
    api.play(climber, players[0])
    api.play(climber, players[2])
    expect_rows(page, "#me-body", around(api, me), BUDGET_MS)
    expect(status).to_have_attribute("data-rank", str(api.rank(me)), timeout=BUDGET_MS)

    # Our own result.
    api.play(rival, me)
    expect_rows(page, "#me-body", around(api, me), BUDGET_MS)
    expect(status).to_have_attribute("data-rank", str(api.rank(me)), timeout=BUDGET_MS)
    assert reads == [], f"the page read /around: {reads}"


def _path(request: Request) -> str:
    return request.url.split("?", 1)[0]
