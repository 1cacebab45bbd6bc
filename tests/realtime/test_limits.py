"""PROTOCOL 3.6 connection limits with real processes: two instances sharing a real Redis.
Streams over a limit are refused before they start (SSE: an HTTP answer; WebSocket: before
the upgrade), 503 when the instance is full, 429 when the user is; with Retry-After. Other
users' streams never notice."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from ..clients import HttpApi, SSEClient, WSClient, poll
from ..services import LiveServer

SECRET = "limits-test-secret-0123456789"


@pytest.fixture(name="cluster")
def _cluster(
    live_servers: Callable[..., LiveServer], redis_url: str
) -> Callable[..., list[LiveServer]]:
    def start(count: int = 2, **env: str) -> list[LiveServer]:
        shared = {"REDIS_URL": redis_url, "JWT_SECRET": SECRET, **env}
        return [live_servers(env=shared) for _ in range(count)]

    return start


class Control:
    """Another user's stream, which must receive every announcement whatever the limits do."""

    def __init__(self, server: LiveServer, admin: HttpApi) -> None:
        self.server, self.admin, self.sent = server, admin, 0

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[Control]:
        async with SSEClient(self.server.url, "matches", self.server.token("control")) as sse:
            assert sse.status == 200
            self.sse = sse
            yield self
            await self.check()

    async def check(self) -> None:
        await self.admin.announce("matches", {"n": self.sent})
        self.sent += 1
        want = list(range(self.sent))
        await self.sse.wait_for(lambda evs: _ns(evs) == want, 10, f"announcements {want}")


def _ns(events: list[dict[str, Any]]) -> list[object]:
    return [e["data"]["n"] for e in events if e["event"] == "announcement"]


async def _refused_sse(server: LiveServer, token: str | None, status: int) -> None:
    async with SSEClient(server.url, "matches", token) as sse:
        assert sse.status == status, sse.status
        await asyncio.wait_for(sse.ended.wait(), 10)  # the problem document read
        assert sse.content_type == "application/problem+json"
        assert sse.body["status"] == status
        retry_after = sse.response_headers["retry-after"]
        assert retry_after.isdigit() and int(retry_after) >= 1


async def _refused_ws(server: LiveServer, token: str | None, status: int) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with WSClient(server.url, token):
            pass
    response = refused.value.response
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1


async def _admitted_sse(server: LiveServer, token: str, timeout: float) -> SSEClient:
    """Open an SSE stream, retrying while it is refused (a slot frees asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        sse = SSEClient(server.url, "matches", token)
        await sse.__aenter__()
        if sse.status == 200:
            return sse
        await sse.close()
        assert sse.status == 429, sse.status
        assert time.monotonic() < deadline, f"still refused after {timeout}s"
        await asyncio.sleep(0.1)


async def test_per_user_limit_holds_across_instances_and_transports(cluster) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster(MAX_CONNECTIONS_PER_USER="2")
    ann = a.token("ann")
    control = Control(b, HttpApi(b.url, b.token("ops", "admin")))
    async with control.watching():
        async with SSEClient(a.url, "matches", ann) as first, WSClient(a.url, ann) as ws:
            assert first.status == 200
            assert (await ws.subscribe(["matches"]))["type"] == "subscribed"
            await control.check()
            # at the limit on A: refused on B (and on A), on both transports
            await _refused_sse(b, ann, 429)
            await _refused_ws(b, ann, 429)
            await _refused_sse(a, ann, 429)
            await control.check()
            # a long-poll is not a stream: not counted, not refused
            assert (await poll(b.url, "matches", ann)).status_code == 200
        # both closed on A: two admitted on B
        second = await _admitted_sse(b, ann, timeout=10)
        try:
            async with WSClient(b.url, ann) as ws:
                assert (await ws.subscribe(["matches"]))["type"] == "subscribed"
                await _refused_sse(a, ann, 429)
        finally:
            await second.close()
        await control.check()


async def test_a_full_instance_answers_503_and_the_other_admits(cluster) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster(MAX_CONNECTIONS="2")
    control = Control(a, HttpApi(b.url, b.token("ops", "admin")))
    async with control.watching():  # one of A's two streams
        async with SSEClient(a.url, "matches", a.token("bob")) as bob:
            assert bob.status == 200
            await _refused_sse(a, a.token("carol"), 503)
            await _refused_ws(a, a.token("carol"), 503)
            async with SSEClient(b.url, "matches", b.token("carol")) as carol:
                assert carol.status == 200
            await control.check()
        # bob left: a slot on A again
        again = await _admitted_sse(a, a.token("carol"), timeout=10)
        await again.close()


async def test_anonymous_streams_are_limited_per_client_address(cluster) -> None:  # type: ignore[no-untyped-def]
    a, b = cluster(MAX_CONNECTIONS_PER_USER="1", PUBLIC_READ="true")
    async with SSEClient(a.url, "matches") as first:
        assert first.status == 200
        await _refused_sse(b, None, 429)
        await _refused_ws(a, None, 429)
        # a signed-in user from the same address has its own count
        async with SSEClient(b.url, "matches", b.token("dan")) as dan:
            assert dan.status == 200


async def test_a_crashed_instance_frees_its_users_slots_within_the_presence_ttl(cluster) -> None:  # type: ignore[no-untyped-def]
    ttl = 5.0
    a, b = cluster(MAX_CONNECTIONS_PER_USER="1", PRESENCE_TTL_SECONDS=str(ttl))
    ann = a.token("ann")
    sse = SSEClient(a.url, "matches", ann)
    await sse.__aenter__()
    try:
        assert sse.status == 200
        await _refused_sse(b, ann, 429)
        a.kill()  # no cleanup at all
        crashed = time.monotonic()
        again = await _admitted_sse(b, ann, timeout=ttl + 10)
        elapsed = time.monotonic() - crashed
        await again.close()
    finally:
        await sse.close()
    assert elapsed <= ttl, f"the crashed instance's stream counted for {elapsed:.1f}s"


async def test_the_memory_engine_counts_streams_per_user_too(live_servers) -> None:  # type: ignore[no-untyped-def]
    server = live_servers(env={"JWT_SECRET": SECRET, "MAX_CONNECTIONS_PER_USER": "1"})
    ann = server.token("ann")
    async with SSEClient(server.url, "matches", ann) as first:
        assert first.status == 200
        await _refused_sse(server, ann, 429)
        await _refused_ws(server, ann, 429)
    # closed: admitted again, on the other transport
    deadline = time.monotonic() + 10
    while True:
        try:
            async with WSClient(server.url, ann) as ws:
                assert (await ws.subscribe(["matches"]))["type"] == "subscribed"
                break
        except InvalidStatus as refused:
            assert refused.response.status_code == 429
            assert time.monotonic() < deadline, "the closed stream's slot was never freed"
            await asyncio.sleep(0.1)
