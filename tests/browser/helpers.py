"""Helpers for the browser tests: a cuttable TCP proxy and an API client."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05
) -> None:
    """Poll a condition (an API answer, a counter) until it holds: a wait, not a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        time.sleep(step)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Api:
    """The service's HTTP API, as a game server or an admin uses it."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=10)
        self._tokens: dict[tuple[str, str], str] = {}

    def close(self) -> None:
        self.http.close()

    def token(self, sub: str = "test-admin", scope: str = "matches:write admin") -> str:
        key = (sub, scope)
        if key not in self._tokens:
            r = self.http.post("/api/dev/token", json={"sub": sub, "scope": scope})
            assert r.status_code == 200, r.text
            self._tokens[key] = r.json()["access_token"]
        return self._tokens[key]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def post(self, path: str, body: Any, expect: int | tuple[int, ...] = (200, 201, 202)) -> Any:
        r = self.http.post(path, json=body, headers=self._headers())
        allowed = (expect,) if isinstance(expect, int) else expect
        assert r.status_code in allowed, f"POST {path}: {r.status_code} {r.text}"
        return r.json()

    def get(self, path: str) -> Any:
        r = self.http.get(path, headers=self._headers())
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
        return r.json()

    def create_match(self, a: str, b: str) -> str:
        return str(self.post("/api/matches", {"player_ids": [a, b]}, expect=201)["match_id"])

    def play(self, winner: str, loser: str) -> dict[str, Any]:
        """Create a match and report `winner` as its winner; the result's Match."""
        match_id = self.create_match(winner, loser)
        return dict(self.post(f"/api/matches/{match_id}/result", {"winner_id": winner}, expect=200))

    def rank(self, player_id: str) -> int:
        return int(self.get(f"/api/players/{player_id}")["rank"])

    def online_count(self) -> int:
        return int(self.get("/api/presence")["online_count"])

    def announce(self, room: str, data: dict[str, Any]) -> str:
        body = {"room": room, "event": "announcement", "data": data}
        return str(self.post("/api/publish", body, expect=202)["id"])


class CuttableProxy:
    """A TCP proxy between the browser and the server that can drop every open connection
    at once (as a restarting load balancer or a flaky network does) and refuse new ones."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.url = ""
        self.refusing = False
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.url = f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._transports.update((writer.transport, up_writer.transport))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._transports.discard(writer.transport)
            self._transports.discard(up_writer.transport)

    def cut(self) -> int:
        """Drop every open connection, both sides, without a goodbye; how many were open."""

        async def _cut() -> int:
            dropped = len(self._transports) // 2
            for t in list(self._transports):
                t.abort()
            self._transports.clear()
            self.cuts += 1
            return dropped

        return asyncio.run_coroutine_threadsafe(_cut(), self._loop).result(10)

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._transports):
                t.abort()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
