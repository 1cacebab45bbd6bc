"""The live board page in a real Chromium against a real server: what a viewer would notice."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Locator, Page, Route, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from ..services import LiveServer
from .conftest import OpenPage
from .helpers import Api, CuttableProxy, unique, wait_until

pytestmark = pytest.mark.browser

OPEN_TIMEOUT = 10_000  # ms: first connection, including the dev-token round trip
SSE_URL = re.compile(r"/api/events(\?|$)")


def row(page: Page, player_id: str, table: str = "#board-body") -> Locator:
    return page.locator(f'{table} tr[data-player-id="{player_id}"]')


def expect_open(page: Page, transport: str, timeout: int = OPEN_TIMEOUT) -> None:
    connection = page.locator("#connection")
    expect(connection).to_have_attribute("data-transport", transport, timeout=timeout)
    expect(connection).to_have_attribute("data-state", "open", timeout=timeout)


def expect_board_equals_api(page: Page, api: Api, timeout: int = 5_000) -> None:
    """Every row of the page has the rank the API gives, in the API's order."""
    board = api.get("/api/leaderboard?offset=0&limit=1000")
    expected = [e["player_id"] for e in board["entries"]]
    rows = page.locator("#board-body tr")
    expect(rows).to_have_count(len(expected), timeout=timeout)
    for entry in board["entries"]:
        expect(row(page, entry["player_id"])).to_have_attribute(
            "data-rank", str(entry["rank"]), timeout=timeout
        )
    shown = rows.evaluate_all("rows => rows.map(r => r.dataset.playerId)")
    assert shown == expected


def seed_four(api: Api) -> tuple[str, str, str, str]:
    """Two winners at about 1216 and two losers at about 1184."""
    w1, l1, w2, l2 = (unique(n) for n in ("w1", "l1", "w2", "l2"))
    api.play(w1, l1)
    api.play(w2, l2)
    return w1, l1, w2, l2


def test_page_shows_the_initial_board(api: Api, open_page: OpenPage) -> None:
    seed_four(api)
    page = open_page(player=unique("viewer"), top="1000")
    expect_open(page, "sse")
    expect_board_equals_api(page, api)
    # Proper table markup: column headers and a row header (the player) per row.
    expect(page.locator("#leaderboard thead th[scope=col]")).to_have_count(5)
    expect(page.locator("#board-body th[scope=row]")).to_have_count(
        page.locator("#board-body tr").count()
    )
    # The stream opened and the snapshot arrived, in that order, in the event log.
    events = page.locator("#event-log li").evaluate_all("els => els.map(e => e.dataset.event)")
    assert events[:2] == ["stream:open", "leaderboard:initial"]


def test_a_result_moves_the_row_within_one_second(api: Api, open_page: OpenPage) -> None:
    w1, l1, w2, l2 = seed_four(api)
    page = open_page(player=unique("viewer"), top="1000")
    expect_open(page, "sse")
    expect_board_equals_api(page, api)
    underdog_before = int(row(page, l2).get_attribute("data-rank") or 0)
    favourite_before = int(row(page, w1).get_attribute("data-rank") or 0)

    match_id = api.create_match(l2, w1)
    started = time.monotonic()
    api.post(f"/api/matches/{match_id}/result", {"winner_id": l2}, expect=200)
    underdog_after, favourite_after = api.rank(l2), api.rank(w1)
    left_ms = max(1, int(1000 - (time.monotonic() - started) * 1000))
    expect(row(page, l2)).to_have_attribute("data-rank", str(underdog_after), timeout=left_ms)

    assert underdog_after < underdog_before and favourite_after > favourite_before
    expect(row(page, w1)).to_have_attribute("data-rank", str(favourite_after))
    # Readable without colour: an arrow and the number of places, and the rating delta.
    expect(row(page, l2).locator(".col-change")).to_contain_text(
        f"▲ {underdog_before - underdog_after}"
    )
    expect(row(page, w1).locator(".col-change")).to_contain_text("▼")
    expect(row(page, l2).locator(".col-change")).to_contain_text("+")
    # Players who were only passed (not in the update) moved too, and the whole board agrees.
    expect_board_equals_api(page, api)
    # The feed announced the result.
    expect(page.locator('#match-feed li[data-event="match:result"]')).to_have_count(1)


def test_online_count_follows_a_second_page(api: Api, open_page: OpenPage) -> None:
    first = open_page(player=unique("alice"))
    expect_open(first, "sse")
    count = first.locator("#online-count")
    # Connections of earlier tests leave within 2 s; start from a settled count.
    wait_until(
        lambda: count.text_content() == str(api.online_count()), 10, "a settled online count"
    )
    baseline = int(count.text_content() or 0)
    assert baseline >= 1

    second = open_page(player=unique("bob"))
    expect_open(second, "sse")
    expect(count).to_have_text(str(baseline + 1), timeout=5_000)
    expect(second.locator("#online-count")).to_have_text(str(baseline + 1), timeout=5_000)

    second.context.close()
    # PROTOCOL: a closed connection leaves the count within 2 s; then the event reaches the page.
    expect(count).to_have_text(str(baseline), timeout=3_000)


def refuse_sse(page: Page) -> None:
    page.route(SSE_URL, lambda route: route.abort("connectionrefused"))


def buffer_sse(page: Page) -> None:
    """A proxy that swallows the stream: the request is never answered."""
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)  # never answered

    page.route(SSE_URL, hold)


@pytest.mark.parametrize(
    ("query", "route"),
    [
        ({"transport": "poll"}, refuse_sse),
        ({}, refuse_sse),
        ({}, buffer_sse),
    ],
    ids=["forced", "auto-sse-refused", "auto-sse-buffered"],
)
def test_long_poll_works(
    api: Api, open_page: OpenPage, query: dict[str, str], route: Callable[[Page], None]
) -> None:
    w1, l1, w2, l2 = seed_four(api)
    page = open_page(player=unique("poller"), top="1000", route=route, **query)
    # Auto mode waits about 4 s for a buffered stream before it falls back.
    expect_open(page, "poll", timeout=15_000)
    expect_board_equals_api(page, api)
    expect(page.locator("#online-count")).to_have_text(re.compile(r"^[1-9]\d*$"))

    match_id = api.create_match(l1, w2)
    started = time.monotonic()
    api.post(f"/api/matches/{match_id}/result", {"winner_id": l1}, expect=200)
    rank = api.rank(l1)
    left_ms = max(1, int(1000 - (time.monotonic() - started) * 1000))
    expect(row(page, l1)).to_have_attribute("data-rank", str(rank), timeout=left_ms)
    expect_board_equals_api(page, api)
    assert page.locator("#connection").get_attribute("data-transport") == "poll"
    # The page says how it is live, and in auto mode why it is on long-poll.
    expect(page.locator("#connection .connection-text")).to_have_text(
        "Live (long-poll)" if query else "Live (long-poll: streaming is blocked here)"
    )
    page.unroute_all(behavior="ignoreErrors")  # let go of held requests


@pytest.mark.parametrize("transport", ["sse", "poll", "websocket"])
def test_every_event_once_across_stream_cuts(
    transport: str, api: Api, proxy: CuttableProxy, open_page: OpenPage
) -> None:
    """While a publisher keeps publishing, the connection is dropped three times (each time once
    the page is live again and receiving), then refused for a while; the page's event log shows
    each published event once, in order: no gap, no duplicate."""
    page = open_page(base=proxy.url, player=unique("watcher"), transport=transport)
    expect_open(page, transport)
    published: list[str] = []
    stop = threading.Event()
    publisher_api = Api(api.base_url)

    def publish() -> None:
        n = 0
        while not stop.is_set() and n < 5000:
            published.append(publisher_api.announce("matches", {"n": n}))
            n += 1
            stop.wait(0.01)  # pace: a steady flow, well inside the server's retained log

    def delivered(index: int) -> None:
        """Wait until the page has the event published as number `index`."""
        wait_until(lambda: len(published) > index, 30, f"event {index} published")
        item = page.locator(
            f'#event-log li[data-event="announcement"][data-event-id="{published[index]}"]'
        )
        expect(item).to_have_count(1, timeout=30_000)

    def reconnects() -> int:
        return int(page.evaluate("window.pulseApp.client.stats.reconnects"))

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        for _ in range(3):
            expect_open(page, transport)
            delivered(len(published) + 10)  # live and receiving: now drop it mid-flow
            assert proxy.cut() >= 1
        expect_open(page, transport)
        delivered(len(published) + 10)
        proxy.refusing = True  # an outage: publishing goes on, nobody can connect
        proxy.cut()
        before = reconnects()
        wait_until(lambda: reconnects() >= before + 2, 30, "reconnect attempts during the outage")
        proxy.refusing = False
        expect_open(page, transport)
        delivered(len(published) + 10)
    finally:
        proxy.refusing = False
        stop.set()
        thread.join(60)
    sentinel = publisher_api.announce("matches", {"n": "last"})
    publisher_api.close()

    announcements = page.locator('#event-log li[data-event="announcement"]')
    expect(announcements.and_(page.locator(f'[data-event-id="{sentinel}"]'))).to_have_count(
        1, timeout=30_000
    )
    got = announcements.evaluate_all("els => els.map(e => e.dataset.eventId)")
    assert len(published) > 40
    assert got == [*published, sentinel], "every event once, in order, no gap, no duplicate"
    # No other logged event (presence, ...) came twice either. Events that are not in the log
    # carry the position they reflect as id and come again after each resume (PROTOCOL 2).
    logged = page.locator("#event-log li").evaluate_all(
        "els => els.filter(e => !['stream:open', 'stream:reset', 'leaderboard:initial',"
        " 'leaderboard:window'].includes(e.dataset.event)).map(e => e.dataset.eventId)"
    )
    assert len(logged) == len(set(logged)), "an event was delivered twice"
    stats = page.evaluate("window.pulseApp.client.stats")
    assert stats["duplicates"] == 0, f"the server sent duplicates across a resume: {stats}"
    # (A cut long-poll request may be retried by the browser itself, unseen by the client.)
    assert stats["reconnects"] >= (2 if transport == "poll" else 5), stats
    assert stats["resets"] == 0, stats
    expect_open(page, transport)


def test_dev_panel_plays_a_match(api: Api, open_page: OpenPage) -> None:
    me = unique("player")
    page = open_page(player=me, top="1000")
    expect_open(page, "sse")
    expect(page.locator("#dev-panel")).to_be_visible()
    opponent = page.locator("#player-b").input_value()
    page.get_by_role("button", name="Create match").click()
    match = page.locator("#dev-matches li").first
    expect(match).to_have_attribute("data-status", "scheduled")
    expect(page.locator('#match-feed li[data-event="match:created"]')).to_have_count(1)
    # Players join the board when their first match is created (a leaderboard:update with
    # previous_rank null).
    expect(row(page, opponent)).to_have_count(1, timeout=5_000)
    expect_board_equals_api(page, api)

    match.get_by_role("button", name=re.compile(r"^Start")).click()
    expect(match).to_have_attribute("data-status", "live")
    expect(page.locator('#match-feed li[data-event="match:started"]')).to_have_count(1)

    match.locator(f'button[data-winner="{me}"]').click()
    expect(match).to_have_attribute("data-status", "completed")
    expect(page.locator('#match-feed li[data-event="match:result"]')).to_contain_text(
        f"{me} beat {opponent}"
    )
    # Our own rank, from our leaderboard:around window, pushed when it changes.
    rank = str(api.rank(me))
    expect(page.locator(f'#me-body tr[data-player-id="{me}"]')).to_have_attribute("data-rank", rank)
    expect(row(page, me)).to_have_attribute("data-rank", rank)


def test_usable_on_a_phone(api: Api, open_page: OpenPage) -> None:
    w1, *_ = seed_four(api)
    page = open_page(player=unique("phone"), viewport={"width": 375, "height": 740}, top="1000")
    expect_open(page, "sse")
    expect(row(page, w1)).to_be_visible()
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
    expect(page.locator("#match-feed")).to_have_attribute("aria-live", "polite")
    expect(page.locator("#connection")).to_have_attribute("role", "status")


def test_without_dev_mode_the_page_asks_for_a_token(
    live_servers: Callable[..., LiveServer], open_page: OpenPage
) -> None:
    """With JWT_SECRET set there is no dev token endpoint: the page offers a token field."""
    server = live_servers(env={"JWT_SECRET": "browser-test-secret-0123456789"})
    page = open_page(base=server.url)
    expect(page.locator("#token-panel")).to_be_visible(timeout=OPEN_TIMEOUT)
    expect(page.locator("#dev-panel")).to_be_hidden()
    page.get_by_label("Access token").fill(server.token("eve"))
    page.get_by_role("button", name="Use token").click()
    expect_open(page, "sse")
    expect(page.locator("#who")).to_contain_text("eve")
    expect(page.locator("#token-panel")).to_be_hidden()
    expect(page.locator("#me-status")).to_contain_text("no rank yet")


def shown_rows(page: Page, table: str) -> list[list[str]]:
    """[player id, rank] of every row of a table body, in the page's order."""
    return list(
        page.locator(f"{table} tr").evaluate_all(
            "rows => rows.map(r => [r.dataset.playerId, r.dataset.rank])"
        )
    )


def expect_rows(page: Page, table: str, expected: list[list[str]], timeout_ms: int) -> None:
    """Wait until the table body shows exactly these [player id, rank] rows, in this order."""
    try:
        page.wait_for_function(
            """([table, expected]) => JSON.stringify(
                 [...document.querySelectorAll(`${table} tr`)].map(
                   r => [r.dataset.playerId, r.dataset.rank])) === expected""",
            arg=[table, json.dumps(expected, separators=(",", ":"))],
            timeout=timeout_ms,
            polling="raf",
        )
    except PlaywrightTimeoutError:
        shown = shown_rows(page, table)
        raise AssertionError(
            f"{table} after {timeout_ms} ms: {shown}, expected {expected}"
        ) from None


def ms_left(started: float, budget_ms: int = 1000) -> int:
    return max(1, int(budget_ms - (time.monotonic() - started) * 1000))


@contextmanager
def steady_draws(api: Api, pause: float = 0.1) -> Iterator[None]:
    """Board traffic that moves nobody, as a busy service has all the time: two other players
    on the same rating draw again and again (delta 0), each result a `leaderboard:update`."""
    a, b = unique("drawer"), unique("drawer")
    background = Api(api.base_url)
    match_id = background.create_match(a, b)
    background.post(f"/api/matches/{match_id}/result", {"draw": True}, expect=200)
    stop = threading.Event()
    played: list[str] = []

    def draw_forever() -> None:
        while not stop.is_set():
            match_id = background.create_match(a, b)
            background.post(f"/api/matches/{match_id}/result", {"draw": True}, expect=200)
            played.append(match_id)
            stop.wait(pause)

    thread = threading.Thread(target=draw_forever, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(played) >= 3, 10, "background draws")
        yield
    finally:
        stop.set()
        thread.join(30)
        background.close()
    assert len(played) >= 3


def test_you_panel_follows_a_newcomer_from_the_first_match(api: Api, open_page: OpenPage) -> None:
    """The signed-in player is not on the board when the page opens (GET .../around is a 404).
    Their first match puts them on the board (a `leaderboard:update` with `previous_rank`
    null); from then on the You panel shows their rank and neighbours, kept current by each
    result, each time within 1 s, while other matches keep the board busy."""
    w1, l1, w2, _ = seed_four(api)
    me, rival = unique("newbie"), unique("rival")
    page = open_page(player=me, top="1000")
    expect_open(page, "sse")
    status = page.locator("#me-status")
    expect(status).to_contain_text("no rank yet")

    def around() -> list[list[str]]:
        body = api.get(f"/api/players/{me}/around?radius=5")  # its window: around:{me}:5
        return [[e["player_id"], str(e["rank"])] for e in body["entries"]]

    def expect_panel(started: float) -> None:
        expected = around()
        assert len(expected) >= 4  # the player and up to five neighbours on each side
        expect_rows(page, "#me-body", expected, ms_left(started))
        rank = {p: r for p, r in expected}[me]
        expect(status).to_have_attribute("data-rank", rank, timeout=ms_left(started, 200))
        expect(page.locator("#me-table")).to_be_visible()

    with steady_draws(api):
        started = time.monotonic()
        match_id = api.create_match(me, rival)  # both new: they join the board at 1200
        expect_panel(started)

        started = time.monotonic()
        api.post(f"/api/matches/{match_id}/result", {"winner_id": rival}, expect=200)
        expect_panel(started)  # 0-1-0, like the demo's ace-1
        expect(status).to_contain_text("0–1–0")

        for winner, loser in ((me, w1), (me, w2), (l1, me)):
            started = time.monotonic()
            api.play(winner, loser)
            expect_panel(started)
        expect(status).to_contain_text("2–2–0")


def test_board_keeps_exactly_top_rows_as_players_move_in_and_out(
    api: Api, open_page: OpenPage
) -> None:
    """With top=N and more players than N, results push players out of the top N and pull
    players in that the page never held (and newcomers join below): after each change, within
    1 s, the page shows exactly the N rows GET /api/leaderboard?limit=N gives, in its order."""
    top = 5
    players = [unique(f"p{i}") for i in range(12)]
    for winner, loser in zip(players[::2], players[1::2], strict=True):
        api.play(winner, loser)  # six at about 1216, six at about 1184

    def expected() -> list[list[str]]:
        body = api.get(f"/api/leaderboard?offset=0&limit={top}")
        assert body["total"] > top
        return [[e["player_id"], str(e["rank"])] for e in body["entries"]]

    page = open_page(player=unique("viewer"), top=str(top))
    expect_open(page, "sse")
    expect_rows(page, "#board-body", expected(), 5_000)

    for step in range(10):
        board = api.get("/api/leaderboard?offset=0&limit=1000")["entries"]
        leader, last = board[0]["player_id"], board[-1]["player_id"]
        started = time.monotonic()
        if step % 3 == 2:
            # Two newcomers join at the initial rating (no result yet), then one of them
            # beats the leader.
            newcomer = unique("new")
            match_id = api.create_match(newcomer, unique("new"))
            expect_rows(page, "#board-body", expected(), ms_left(started))
            started = time.monotonic()
            api.post(f"/api/matches/{match_id}/result", {"winner_id": newcomer}, expect=200)
            api.play(newcomer, leader)
        else:
            api.play(last, leader)  # the leader falls, the player at N+1 moves up
        want = expected()
        expect_rows(page, "#board-body", want, ms_left(started))
        total = api.get("/api/leaderboard?offset=0&limit=1")["total"]
        expect(page.locator("#board-status")).to_have_text(
            f"Top {top} of {total} players.", timeout=ms_left(started, 1500)
        )
    # The case this is about did happen: the page had to read the top again.
    rereads = page.evaluate(
        "performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/api/leaderboard?')).length"
    )
    assert rereads >= 1
