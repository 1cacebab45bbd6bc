"""The page at game scale: a seeded board of a few thousand players, paged through over
GET /api/leaderboard?offset= (go to rank N, next, find me) without ever loading the whole
board, and live results applied to the deep page the viewer is on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, Request, expect

from ..services import LiveServer
from .conftest import OpenPage
from .helpers import Api
from .test_board_page import expect_open, expect_rows, row

pytestmark = pytest.mark.browser

PLAYERS = 3_000
SIZE = 25  # rows a page (the page's `top`)
BUDGET_MS = 5_000  # generous on a loaded machine: a result reaches the page within 1 s

SEED = """
import asyncio, sys
from quart_app.store.database import Store
from quart_app.store.seed import seed_players

async def main() -> None:
    store = Store(sys.argv[1])
    await store.db.connect()
    try:
        await seed_players(store, int(sys.argv[2]))
    finally:
        await store.db.disconnect()

asyncio.run(main())
"""


@pytest.fixture(name="live_server")
def _seeded_live_server(live_servers: Callable[..., LiveServer], tmp_path: Path) -> LiveServer:
    """The default instance, over a database seeded in bulk before it starts (in other
    processes: sync Playwright keeps an event loop running in this thread)."""
    database_url = f"sqlite:///{tmp_path}/rankpulse.db"
    env = {**os.environ, "DATABASE_URL": database_url}
    run = {"cwd": tmp_path, "env": env, "check": True}
    subprocess.run([sys.executable, "-m", "quart_app", "migrate"], **run)  # type: ignore[call-overload]
    subprocess.run([sys.executable, "-c", SEED, database_url, str(PLAYERS)], **run)  # type: ignore[call-overload]
    return live_servers()


def api_page(api: Api, offset: int) -> list[list[str]]:
    body = api.get(f"/api/leaderboard?offset={offset}&limit={SIZE}")
    assert body["total"] == PLAYERS
    return [[e["player_id"], str(e["rank"])] for e in body["entries"]]


def player_at(api: Api, rank: int) -> str:
    return str(api.get(f"/api/leaderboard?offset={rank - 1}&limit=1")["entries"][0]["player_id"])


def board_reads(requests: list[str]) -> list[str]:
    return [url for url in requests if "/api/leaderboard" in url]


def test_deep_pages_and_jump_to_me_follow_live_results(api: Api, open_page: OpenPage) -> None:
    me = player_at(api, 2_613)
    requests: list[str] = []

    def watch(page: Page) -> None:
        page.on("request", lambda r: requests.append(_url(r)))

    page = open_page(player=me, top=str(SIZE), route=watch)
    expect_open(page, "sse")
    expect_rows(page, "#board-body", api_page(api, 0), BUDGET_MS)
    expect(page.locator("#board-status")).to_have_text(f"Top {SIZE} of {PLAYERS} players.")

    # Go to rank 2,000: the page of ranks 1,976-2,000.
    page.locator("#rank-input").fill("2000")
    page.locator("#rank-form button[type=submit]").click()
    expect(page.locator("#pager")).to_have_attribute("data-offset", "1975", timeout=BUDGET_MS)
    expect_rows(page, "#board-body", api_page(api, 1975), BUDGET_MS)
    expect(page.locator("#board-status")).to_have_text(
        f"Ranks 1976–2000 of {PLAYERS} players.", timeout=BUDGET_MS
    )

    # A player on the page wins: climbs out of it (about 16 points: a hundred ranks), and the
    # rows below move up into the page.
    api.play(player_at(api, 1_990), player_at(api, 10))
    expect_rows(page, "#board-body", api_page(api, 1975), BUDGET_MS)
    # A player from below the page wins: climbs into it or past it; the page shifts down.
    api.play(player_at(api, 2_060), player_at(api, 20))
    expect_rows(page, "#board-body", api_page(api, 1975), BUDGET_MS)
    # Results far above the page move nobody on it; results that cross it shift it.
    api.play(player_at(api, 30), player_at(api, 5))
    api.play(player_at(api, 2_500), player_at(api, 1_900))
    expect_rows(page, "#board-body", api_page(api, 1975), BUDGET_MS)

    # Next page.
    page.locator("#page-next").click()
    expect(page.locator("#pager")).to_have_attribute("data-offset", "2000", timeout=BUDGET_MS)
    expect_rows(page, "#board-body", api_page(api, 2000), BUDGET_MS)

    # Find me: the page that holds the signed-in player, their row marked.
    page.locator("#page-me").click()
    my_rank = api.rank(me)
    my_offset = (my_rank - 1) // SIZE * SIZE
    expect(page.locator("#pager")).to_have_attribute(
        "data-offset", str(my_offset), timeout=BUDGET_MS
    )
    expect_rows(page, "#board-body", api_page(api, my_offset), BUDGET_MS)
    expect(row(page, me)).to_have_attribute("aria-current", "true")
    expect(row(page, me)).to_have_attribute("data-rank", str(my_rank))
    expect(row(page, me)).to_be_in_viewport()

    # Back to the top, followed live again.
    page.locator("#page-top").click()
    expect(page.locator("#pager")).to_have_attribute("data-offset", "0", timeout=BUDGET_MS)
    expect_rows(page, "#board-body", api_page(api, 0), BUDGET_MS)
    api.play(player_at(api, 40), player_at(api, 1))
    expect_rows(page, "#board-body", api_page(api, 0), BUDGET_MS)

    # Never the whole board: every read of it asked for one page.
    reads = board_reads(requests)
    assert reads, "the page never read a deep page"
    assert all(f"limit={SIZE}" in url for url in reads), reads


def _url(request: Request) -> str:
    return request.url
