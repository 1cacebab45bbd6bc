"""PROTOCOL 3.7 from the page's side, in a real Chromium: the instance serving the page drains
(SIGTERM) while announcements flow, and a load balancer sends new connections to another
instance. The page follows what the contract tells a client to do (SSE: the stream ends and
the client comes back; WebSocket: close 1012, resume after a random delay; long-poll: the
pending poll answers at once) and, resuming with its cursor, shows every event once, in
order, with no reset."""

from __future__ import annotations

import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from ..services import LiveServer, RedisServer
from .conftest import OpenPage
from .helpers import Api, CuttableProxy, unique, wait_until
from .test_board_page import OPEN_TIMEOUT, expect_open

pytestmark = pytest.mark.browser

SECRET = "browser-drain-secret-0123456789"


class AdminApi(Api):
    """The API with a token signed by the shared secret (no dev-token endpoint here)."""

    def __init__(self, server: LiveServer) -> None:
        super().__init__(server.url)
        self._admin = server.token("ops", "matches:write admin")

    def token(self, sub: str = "test-admin", scope: str = "matches:write admin") -> str:
        return self._admin


@pytest.mark.parametrize("transport", ["sse", "websocket", "poll"])
def test_the_page_moves_off_a_draining_instance_and_loses_nothing(
    transport: str,
    live_servers: Callable[..., LiveServer],
    own_redis: RedisServer,
    open_page: OpenPage,
) -> None:
    env = {"REDIS_URL": own_redis.url, "JWT_SECRET": SECRET, "DRAIN_SECONDS": "2"}
    a, b = live_servers(env=env), live_servers(env=env)
    balancer = CuttableProxy("127.0.0.1", a.port)
    balancer.start()
    publisher = AdminApi(b)
    published: list[str] = []
    stop = threading.Event()

    def publish() -> None:
        n = 0
        while not stop.is_set() and n < 5000:
            published.append(publisher.announce("matches", {"n": n}))
            n += 1
            stop.wait(0.02)  # the publishing pace, not a wait for something

    def delivered(index: int) -> None:
        wait_until(lambda: len(published) > index, 30, f"event {index} published")
        item = page.locator(
            f'#event-log li[data-event="announcement"][data-event-id="{published[index]}"]'
        )
        expect(item).to_have_count(1, timeout=30_000)

    try:
        thread = threading.Thread(target=publish)
        try:
            page = open_page(base=balancer.url, transport=transport)
            expect(page.locator("#token-panel")).to_be_visible(timeout=OPEN_TIMEOUT)
            page.get_by_label("Access token").fill(a.token(unique("watcher")))
            page.get_by_role("button", name="Use token").click()
            expect_open(page, transport)
            thread.start()
            delivered(len(published) + 10)  # live and receiving on A

            assert a.process is not None
            os.killpg(a.process.pid, signal.SIGTERM)
            # The load balancer sees /readyz 503 and sends new connections to B.
            wait_until(lambda: a.process is not None and _not_ready(a), 5, "A draining")
            balancer.upstream = ("127.0.0.1", b.port)
            wait_until(
                lambda: a.process is not None and a.process.poll() is not None, 10, "A exits"
            )

            expect_open(page, transport)
            delivered(len(published) + 10)  # live and receiving on B
        finally:
            stop.set()
            if thread.is_alive():
                thread.join(60)
        sentinel = publisher.announce("matches", {"n": "last"})
        publisher.close()
        announcements = page.locator('#event-log li[data-event="announcement"]')
        expect(announcements.and_(page.locator(f'[data-event-id="{sentinel}"]'))).to_have_count(
            1, timeout=30_000
        )
        got = announcements.evaluate_all("els => els.map(e => e.dataset.eventId)")
        assert got == [*published, sentinel], "every event once, in order, no gap, no duplicate"
        stats = page.evaluate("window.pulseApp.client.stats")
        assert stats["resets"] == 0 and stats["duplicates"] == 0, stats
        assert page.locator("#connection").get_attribute("data-transport") == transport
    finally:
        balancer.stop()


def _not_ready(server: LiveServer) -> bool:
    try:
        with urllib.request.urlopen(server.url + "/readyz", timeout=1):
            return False
    except urllib.error.HTTPError as refused:
        return refused.code == 503
    except OSError:
        return True  # gone already
