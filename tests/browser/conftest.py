"""Fixtures of the browser tests: Debian's Chromium driven by Playwright against `live_server`
(tests/conftest.py: a real instance per test, development mode), the API, a cuttable proxy."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    ViewportSize,
    sync_playwright,
)

from ..services import LiveServer, require_tool
from .helpers import Api, CuttableProxy

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]

NETWORK_NOISE = ("Failed to load resource", "WebSocket connection to", "net::ERR_")


# Package scope, not session: sync Playwright keeps an event loop running in this thread while
# it lives, and the suite's async tests (pytest-asyncio) cannot start theirs beside it.
@pytest.fixture(name="playwright_instance", scope="package")
def _playwright_instance() -> Iterator[Playwright]:
    require_tool("chromium", CHROMIUM)  # fails under CI=true, where scripts/test installs it
    with sync_playwright() as p:
        yield p


@pytest.fixture(name="browser", scope="package")
def _browser(playwright_instance: Playwright) -> Iterator[Browser]:
    browser = playwright_instance.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture(name="api")
def _api(live_server: LiveServer) -> Iterator[Api]:
    api = Api(live_server.url)
    yield api
    api.close()


@pytest.fixture(name="proxy")
def _proxy(live_server: LiveServer) -> Iterator[CuttableProxy]:
    parts = urlsplit(live_server.url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 80)
    proxy.start()
    yield proxy
    proxy.stop()


OpenPage = Callable[..., Page]


@pytest.fixture(name="open_page")
def _open_page(browser: Browser, live_server: LiveServer) -> Iterator[OpenPage]:
    """Open the board page in a fresh browser context: `open_page(player=..., transport=...)`.

    Uncaught page errors fail the test. `base` points the page at another origin (the proxy).
    """
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def open_page(
        base: str | None = None,
        viewport: ViewportSize | None = None,
        route: Callable[[Page], Any] | None = None,
        **query: str,
    ) -> Page:
        context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{exc}"))

        def console(msg: ConsoleMessage) -> None:
            # Network failures are what some tests cause on purpose; anything else is a bug.
            if msg.type == "error" and not any(s in msg.text for s in NETWORK_NOISE):
                errors.append(f"console: {msg.text}")

        page.on("console", console)
        if route is not None:
            route(page)
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        page.goto(f"{base or live_server.url}/{'?' + qs if qs else ''}")
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not errors, f"errors in the page: {errors}"
