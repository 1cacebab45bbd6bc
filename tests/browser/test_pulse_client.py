"""PulseClient (static/pulse.js) driven from the board page on each transport: a cursor the
server cannot resume from, and rooms joined and left on a live connection. Each test reads
only its own client's events (its own players, rooms, tags), never the board as a whole: one
instance serves the module (conftest.shared_servers) instead of one per test."""

from __future__ import annotations

import pytest

from ..services import LiveServer
from .conftest import OpenPage
from .helpers import Api, unique
from .test_board_page import expect_open, seed_four

pytestmark = pytest.mark.browser


@pytest.fixture(name="live_server")
def _live_server(shared_live_server: LiveServer) -> LiveServer:
    return shared_live_server


@pytest.mark.parametrize("transport", ["sse", "poll", "websocket"])
def test_unknown_cursor_resets_and_reloads(transport: str, api: Api, open_page: OpenPage) -> None:
    """A cursor the server cannot resume from: `stream:reset` (unknown), the client tells the
    app to drop its state, and a fresh `leaderboard:initial` follows."""
    seed_four(api)
    page = open_page(player=unique("viewer"))
    expect_open(page, "sse")
    seen = page.evaluate(
        """async (transport) => {
          const { PulseClient } = await import('/static/pulse.js');
          const c = new PulseClient({
            rooms: ['leaderboard:global'], transport, cursor: 'no-such-epoch.42',
            token: window.pulseApp.auth.token,
          });
          const seen = [];
          c.on('*', (e) => seen.push(e.event));
          c.on('reset', (r) => seen.push(`reset:${r.reason}:${r.resume}`));
          const initial = new Promise((resolve) => c.on('leaderboard:initial', resolve));
          c.connect();
          await Promise.race([initial, new Promise((r) => setTimeout(r, 8000))]);
          c.close();
          return seen;
        }""",
        transport,
    )
    assert "stream:reset" in seen and "reset:unknown:false" in seen, seen
    assert "leaderboard:initial" in seen, seen
    assert seen.index("reset:unknown:false") < seen.index("leaderboard:initial"), seen


@pytest.mark.parametrize("transport", ["sse", "poll", "websocket"])
def test_client_subscribe_and_unsubscribe(transport: str, api: Api, open_page: OpenPage) -> None:
    """PulseClient.subscribe/unsubscribe on a live connection: POST /api/subscribe on SSE, frames
    on WebSocket, the next poll's rooms on long-poll. A room joined delivers from then on (the
    board with its snapshot); a room left delivers nothing more."""
    seed_four(api)
    page = open_page(player=unique("viewer"))
    expect_open(page, "sse")
    plain_token = api.token(unique("plain"), scope="")  # no admin scope: others' rooms are private
    page.evaluate(
        """async ([transport, token]) => {
          const { PulseClient } = await import('/static/pulse.js');
          const c = new PulseClient({ rooms: ['presence'], transport, token });
          window.sub = { client: c, seen: [] };
          c.on('*', (e) => window.sub.seen.push([e.event, e.data && e.data.tag]));
          const open = new Promise((ok) => c.on('state', (s) => s.state === 'open' && ok()));
          c.connect();
          await open;
        }""",
        [transport, plain_token],
    )

    def seen() -> list[list[str | None]]:
        return list(page.evaluate("window.sub.seen"))

    api.announce("presence", {"tag": "p1"})
    page.wait_for_function("window.sub.seen.some(([e, t]) => t === 'p1')", timeout=5_000)
    rooms = page.evaluate("window.sub.client.subscribe(['matches', 'leaderboard:global'])")
    assert sorted(rooms) == ["leaderboard:global", "matches", "presence"]
    api.announce("matches", {"tag": "m1"})
    page.wait_for_function("window.sub.seen.some(([e, t]) => t === 'm1')", timeout=5_000)
    if transport != "poll":  # a poll resumes from its cursor: no snapshot for a joined room
        assert ["leaderboard:initial", None] in seen()

    rooms = page.evaluate("window.sub.client.unsubscribe(['matches'])")
    assert sorted(rooms) == ["leaderboard:global", "presence"]
    api.announce("matches", {"tag": "m2"})
    api.announce("presence", {"tag": "p2"})
    page.wait_for_function("window.sub.seen.some(([e, t]) => t === 'p2')", timeout=5_000)
    tags = [t for _, t in seen() if t]
    assert tags == ["p1", "m1", "p2"], tags
    assert page.evaluate("window.sub.client.transport") == transport
    # Asking for someone else's private room is refused (403), and the rooms stay as they were.
    refused = page.evaluate(
        """() => window.sub.client.subscribe(['player:somebody-else']).then(
             () => 'accepted', (err) => String(err.status))"""
    )
    assert refused == "403"
    assert sorted(page.evaluate("window.sub.client.rooms")) == ["leaderboard:global", "presence"]
    page.evaluate("window.sub.client.close()")
