"""Take the README's screenshot of the live board with the same tooling as the browser tests:
a real `rankpulse serve --demo` on the embedded default, headless Chromium driven by
Playwright. Run: .venv/bin/python scripts/screenshot.py [docs/board.png]
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/board.png").resolve()
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="lrp-shot-")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quart_app",
            "serve",
            "--port",
            str(port),
            "--demo",
            "--demo-players",
            "60",
        ],
        cwd=workdir,
        env={**os.environ, "LOG_LEVEL": "warning"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"),
                headless=True,
                args=CHROMIUM_ARGS,
            )
            # Reduced motion: the rows settle at once instead of being caught mid-animation.
            page = browser.new_page(
                viewport={"width": 1280, "height": 860}, reduced_motion="reduce"
            )
            page.goto(f"{url}/?player=ace-1&top=15")
            # Let the demo play long enough for a populated board and a busy feed.
            page.wait_for_function(
                "document.querySelectorAll('[data-player-id]').length >= 15", timeout=60_000
            )
            page.wait_for_function(
                "document.querySelectorAll('#event-log li').length >= 60", timeout=60_000
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
        print(f"wrote {out}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(10)


if __name__ == "__main__":
    main()
