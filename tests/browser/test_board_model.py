"""static/board_model.js on its own: the pure board model imported into a real Chromium page
and driven with events, no DOM and no server traffic involved (node is not needed)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page

from ..services import LiveServer
from .conftest import OpenPage
from .helpers import unique

pytestmark = pytest.mark.browser

# Runs `body` with `BoardModel`, `YouModel`, `pageOffsetOf` in scope; `entry(id, rating, rank)`
# and `change(id, rating, rank, previous_rank, version)` build rows; `shown(model)` lists
# [player id, rank] of the rows to show.
PRELUDE = """async ([body, arg]) => {
  const { BoardModel, YouModel, pageOffsetOf } = await import('/static/board_model.js');
  const entry = (id, rating, rank) =>
    ({ rank, player_id: id, name: id, rating, wins: 0, losses: 0, draws: 0 });
  const change = (id, rating, rank, previous_rank, version = 1) =>
    ({ ...entry(id, rating, rank), previous_rank, delta: 0, version });
  const shown = (m) => m.rows().map((e) => [e.player_id, e.rank]);
  return await (new Function('BoardModel', 'YouModel', 'pageOffsetOf', 'entry', 'change',
    'shown', 'arg', body))(BoardModel, YouModel, pageOffsetOf, entry, change, shown, arg);
}"""


@pytest.fixture(name="live_server")
def _live_server(shared_live_server: LiveServer) -> LiveServer:
    """The model runs in the page with no server traffic: one instance serves the page and its
    script to every test of the module (conftest.shared_servers), instead of one per test."""
    return shared_live_server


@pytest.fixture(name="page")
def _page(open_page: OpenPage) -> Page:
    return open_page(player=unique("model"))


def run(page: Page, body: str, arg: Any = None) -> Any:
    return page.evaluate(PRELUDE, [body, arg])


def test_top_page_counts_ranks_and_asks_for_a_read_when_a_row_leaves(page: Page) -> None:
    result = run(
        page,
        """
        const m = new BoardModel({ size: 3, slack: 0 });
        m.applyInitial({ entries: [entry('a', 1300, 1), entry('b', 1200, 2), entry('c', 1100, 3)],
                         total: 5 });
        const before = [shown(m), m.needsRead()];
        // d (rank 4, not known here) passes b: counted in, the order follows the ratings.
        m.applyUpdate({ changes: [change('d', 1250, 2, 4)] }, 1000);
        const climbed = [shown(m), m.needsRead()];
        // a falls below the known part: the page holds fewer rows than it shows.
        m.applyUpdate({ changes: [change('a', 900, 5, 1)] }, 1001);
        return [before, climbed, [shown(m), m.needsRead()], m.total];
        """,
    )
    before, climbed, fell, total = result
    assert before == [[["a", 1], ["b", 2], ["c", 3]], False]
    assert climbed == [[["a", 1], ["d", 2], ["b", 3]], False]
    assert fell == [[["d", 1], ["b", 2]], True]
    assert total == 5


def test_a_read_of_the_top_replays_the_updates_it_may_not_reflect(page: Page) -> None:
    rows = run(
        page,
        """
        const m = new BoardModel({ size: 2, slack: 0, readLagMs: 2000 });
        m.applyInitial({ entries: [entry('a', 1300, 1), entry('b', 1200, 2)], total: 3 });
        const epoch = m.beginRead(5000);
        m.applyUpdate({ changes: [change('c', 1400, 1, 3)] }, 5100);  // during the read
        // The read lagged: it does not show c's climb yet.
        m.applyRead({ entries: [entry('a', 1300, 1), entry('b', 1200, 2)], total: 3 }, 5000, epoch);
        return shown(m);
        """,
    )
    assert rows == [["c", 1], ["a", 2]]


def test_deep_page_moves_rows_within_it_and_reads_again_when_a_change_crosses_it(
    page: Page,
) -> None:
    result = run(
        page,
        """
        const m = new BoardModel({ size: 3, readLagMs: 2000 });
        m.total = 1000;
        m.goTo(pageOffsetOf(502, 3));  // ranks 502..504
        const chosen = [m.offset, m.needsRead()];
        const epoch = m.beginRead(0);
        m.applyRead({ entries: [entry('p', 1203, 502), entry('q', 1202, 503),
                                entry('r', 1201, 504)], total: 1000 }, 0, epoch);
        const loaded = [shown(m), m.needsRead()];
        // r passes q within the page: moved at once, no read.
        m.applyUpdate({ changes: [change('r', 1202.5, 503, 504)] }, 10000);
        const within = [shown(m), m.needsRead()];
        // Results entirely above the page (ranks 3 -> 1) or below it: nothing moves.
        m.applyUpdate({ changes: [change('x', 1500, 1, 3), change('y', 800, 990, 980)] }, 10001);
        const outside = [shown(m), m.needsRead()];
        // A player climbs from rank 900 to 10: every row of the page shifts by one.
        m.applyUpdate({ changes: [change('z', 1450, 10, 900)] }, 10002);
        const crossed = [m.needsRead(), m.confirmReadIn(10100, 10200)];
        const again = m.beginRead(10100);
        m.applyRead({ entries: [entry('s', 1204, 502), entry('p', 1203, 503),
                                entry('r', 1202.5, 504)], total: 1000 }, 10100, again);
        // That read was sent within the read lag of the crossing: one more, after the lag.
        const after = [shown(m), m.needsRead(), m.confirmReadIn(10100, 10200),
                       m.confirmReadIn(12100, 12200)];
        // A newcomer below the page is one more player, and moves nobody on it.
        m.applyUpdate({ changes: [change('n', 1200, 600, null)] }, 13000);
        return [chosen, loaded, within, outside, crossed, after, m.total, m.needsRead()];
        """,
    )
    chosen, loaded, within, outside, crossed, after, total, reads = result
    assert chosen == [501, True]
    assert loaded == [[["p", 502], ["q", 503], ["r", 504]], False]
    assert within == [[["p", 502], ["r", 503], ["q", 504]], False]
    assert outside == within
    assert crossed == [True, 1802]
    assert after == [[["s", 502], ["p", 503], ["r", 504]], False, 1802, None]
    assert total == 1001 and reads is False


def test_an_older_row_never_replaces_a_newer_one_on_a_deep_page(page: Page) -> None:
    rows = run(
        page,
        """
        const m = new BoardModel({ size: 2 });
        m.total = 100;
        m.goTo(50);
        const epoch = m.beginRead(0);
        const rows = [entry('p', 1200, 51), entry('q', 1199, 52)];
        m.applyRead({ entries: rows, total: 100 }, 0, epoch);
        m.applyUpdate({ changes: [change('q', 1199.5, 52, 52, 7)] }, 1);
        m.applyUpdate({ changes: [change('q', 1100, 52, 52, 6)] }, 2);  // older: ignored
        return m.rows().map((e) => [e.player_id, e.rating]);
        """,
    )
    assert rows == [["p", 1200], ["q", 1199.5]]


def test_a_stale_read_is_dropped_after_another_page_was_chosen(page: Page) -> None:
    result = run(
        page,
        """
        const m = new BoardModel({ size: 2 });
        m.total = 100;
        m.goTo(10);
        const epoch = m.beginRead(0);
        m.goTo(20);  // the viewer clicked on before the answer came
        const taken = m.applyRead({ entries: [entry('p', 1200, 11)], total: 100 }, 0, epoch);
        return [taken, m.offset, m.ready, shown(m)];
        """,
    )
    assert result == [False, 20, False, []]


def test_page_offsets_and_clamping(page: Page) -> None:
    result = run(
        page,
        """
        const m = new BoardModel({ size: 25 });
        m.total = 3000;
        m.goTo(99999);
        const clamped = m.offset;
        m.goTo(-5);
        return [pageOffsetOf(1, 25), pageOffsetOf(25, 25), pageOffsetOf(26, 25),
                pageOffsetOf(2000, 25), clamped, m.offset];
        """,
    )
    assert result == [0, 0, 25, 1975, 2975, 0]


def test_you_model_follows_only_its_own_window_and_rows(page: Page) -> None:
    result = run(
        page,
        """
        const you = new YouModel('me', 5);
        const other = you.applyWindow({ window: 'leaderboard:around:someone:5',
                                        entries: [entry('someone', 1300, 1)] });
        const mine = you.applyWindow({ window: 'leaderboard:around:me:5',
                                       entries: [entry('x', 1300, 7), entry('me', 1250, 8)] });
        const notMe = you.applyOwnRow({ player_id: 'x', rank: 1 });
        you.applyOwnRow({ player_id: 'me', rank: 6, rating: 1266 });
        return [you.room, other, mine, notMe, you.entry.rank, you.entry.rating, you.around.length];
        """,
    )
    assert result == ["leaderboard:around:me:5", False, True, False, 6, 1266, 2]
