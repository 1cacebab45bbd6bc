"""The identity provider's key set (JWKS), fetched in the background, never on a request.

A request only ever reads the cached key set: the fetch runs in one background task, through a
worker thread (`asyncio.to_thread` around urllib: the service has no async HTTP client among
its dependencies, httpx is only a test dependency, and one fetch at a time needs only one
thread), so an identity provider that hangs or is down cannot stall the event loop. Until the
first key set arrives the task retries with exponential backoff (capped); after that, a key id
the set lacks asks for a refetch, at most once per `refetch_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import urllib.request
from typing import Any

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 5.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


def _download(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        document = json.load(response)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the JWKS document has no 'keys' list")
    return document


class JwksFetcher:
    """Keeps `document` (the raw JWKS, or None before the first success) fresh."""

    def __init__(
        self,
        url: str,
        *,
        refetch_seconds: float,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self.url = url
        self.refetch_seconds = refetch_seconds
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.timeout = timeout
        self.document: dict[str, Any] | None = None
        self.fetches = 0  # attempts, for tests and logs
        self.loaded_at = 0.0  # monotonic time of the last success
        self.next_attempt_at = 0.0  # monotonic: when the next attempt is due while failing
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_load: list[Any] = []

    def on_load(self, callback: Any) -> None:
        """`callback(document)` after each successful fetch."""
        self._on_load.append(callback)

    def start(self) -> None:
        """Start the fetch task (idempotent; a no-op outside an event loop)."""
        if self._task is None:
            try:
                self._task = asyncio.get_running_loop().create_task(self._run())
            except RuntimeError:
                pass

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def want_refresh(self) -> None:
        """A key id was unknown: refetch soon, but not before `refetch_seconds` after the last
        load (junk key ids must not make us hammer the identity provider)."""
        self._wanted.set()

    def retry_after(self) -> int:
        """Seconds a client should wait while no key set was ever loaded (at least 1)."""
        return max(1, math.ceil(self.next_attempt_at - time.monotonic()))

    async def _run(self) -> None:
        failures = 0
        while True:
            if self.document is not None:
                await self._wanted.wait()
                wait = self.loaded_at + self.refetch_seconds - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._wanted.clear()
            if await self._fetch_once():
                failures = 0
                continue
            failures += 1
            delay = min(self.backoff_cap, self.backoff_base * 2 ** (failures - 1))
            self.next_attempt_at = time.monotonic() + delay
            await asyncio.sleep(delay)

    async def _fetch_once(self) -> bool:
        self.fetches += 1
        try:
            document = await asyncio.to_thread(_download, self.url, self.timeout)
        except Exception as exc:  # noqa: BLE001 - any failure: keep what we have, retry later
            log.warning("JWKS fetch from %s failed: %s", self.url, exc)
            return False
        for callback in self._on_load:
            try:
                callback(document)
            except Exception as exc:  # noqa: BLE001 - a bad key set is a failed fetch
                log.warning("JWKS from %s is unusable: %s", self.url, exc)
                return False
        self.document = document
        self.loaded_at = time.monotonic()
        return True
