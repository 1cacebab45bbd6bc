"""PROTOCOL 3.7 with real processes: SIGTERM drains an instance instead of dropping everyone.

/readyz and new streams answer 503 at once; an SSE stream's last word is a jittered `retry:`
(no stream:reset); a WebSocket closes with 1012; a pending long-poll answers at once; streams
end spread over DRAIN_SECONDS; the process exits within DRAIN_SECONDS + 5 s, also with Redis
and the database gone. Clients resume on another instance with their cursor and lose nothing.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from ..clients import HttpApi
from ..drain_clients import ROOM, Ending, Follower
from ..faults import FaultProxy
from ..helpers import lane_took
from ..services import LiveServer, PostgresServer, RedisServer

SECRET = "drain-test-secret-0123456789"


async def _publisher(api: HttpApi, sent: list[int], stop: asyncio.Event, rate: float) -> None:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as client:
        while not stop.is_set():
            n = len(sent)
            response = await client.post(
                "/api/publish",
                headers=api.headers,
                json={"room": ROOM, "event": "announcement", "data": {"n": n}},
            )
            assert response.status_code == 202, response.text
            sent.append(n)
            await asyncio.sleep(1 / rate)  # the publishing rate, not a wait for something


async def test_sigterm_drains_every_transport_and_exits_in_time(
    live_servers: Callable[..., LiveServer],
) -> None:
    drain = 2.0
    server = live_servers(env={"JWT_SECRET": SECRET, "DRAIN_SECONDS": str(drain)})
    token = server.token("viewer")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        head = (
            await http.get(
                "/api/poll", params={"rooms": ROOM}, headers={"Authorization": f"Bearer {token}"}
            )
        ).json()
        clients = [Follower(t, token, head["cursor"]) for t in ("sse", "ws", "poll")]
        never = asyncio.Event()
        sessions = [asyncio.create_task(c.session(server.port, never)) for c in clients]
        await _until(lambda: all(c.opened.is_set() for c in clients), 10, "clients open", sessions)
        # The follower's poll is pending on the server (the lane counted it after the head
        # poll above) before the drain begins.
        await lane_took(server.url, 2)

        since = server.sigterm()
        while (ready := await http.get("/readyz")).status_code == 200:
            assert time.monotonic() - since < 1.0, "/readyz still 200 a second after SIGTERM"
        assert ready.status_code == 503 and ready.headers["Retry-After"]
        refused = await http.get(
            "/api/events", params={"rooms": ROOM}, headers={"Authorization": f"Bearer {token}"}
        )
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        # A new long-poll too: answered at once with nothing, the client would poll this
        # instance again at once, in a loop, until it exits.
        polled = await http.get(
            "/api/poll",
            params={"rooms": ROOM, "cursor": head["cursor"], "timeout": "5"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert polled.status_code == 503, polled.text
        assert int(polled.headers["Retry-After"]) >= 1

        endings: list[Ending] = await asyncio.wait_for(asyncio.gather(*sessions), drain + 3)
        by_kind = {c.transport: e for c, e in zip(clients, endings, strict=True)}
        assert by_kind["poll"].kind == "poll-answer"
        assert by_kind["poll"].at - since < 1.0, "a pending long-poll answers at once"
        sse = by_kind["sse"]
        assert sse.kind == "sse-eof" and not sse.reset
        assert sse.retry_ms is not None and 0 <= sse.retry_ms <= 3000
        ws = by_kind["ws"]
        assert (ws.kind, ws.close_code) == ("ws-close", 1012)
        for ending in (sse, ws):
            assert ending.at - since <= drain + 0.5
    took = await server.exit_time(since, drain + 5)
    assert took <= drain + 5


def _spread(endings: list[Ending], since: float) -> tuple[float, int, int]:
    """How long the ends spanned, the most in any one second (counted from the first end:
    how soon the drain starts after the signal is not its spread), and the most in any two
    consecutive seconds."""
    times = sorted(e.at - since for e in endings)
    times = [t - times[0] for t in times]
    per_second = Counter(int(t) for t in times)
    pairs = [per_second[s] + per_second[s + 1] for s in range(int(times[-1]) + 1)]
    print("stream ends per second from the first:", sorted(per_second.items()))
    return times[-1] - times[0], max(per_second.values()), max(pairs)


@pytest.mark.slow
@pytest.mark.parametrize("redis_gone", [False, True], ids=["redis-up", "redis-stopped"])
async def test_two_thousand_streams_leave_a_draining_instance_spread_and_resume_elsewhere(
    live_servers: Callable[..., LiveServer],
    own_redis: RedisServer,
    redis_gone: bool,
) -> None:
    """2,000 streams on A (SSE, WebSocket, long-poll), announcements flowing, SIGTERM to A:
    A's streams end spread over >= half of DRAIN_SECONDS, no more than 1/4 in any second;
    every client resumes on B with its cursor and gets every announcement once, in order;
    A exits within DRAIN_SECONDS + 5 s. With Redis stopped first: the exit and the spread."""
    # 5, not 4: spread evenly over 4 s, a quarter per second is the nominal rate itself, and
    # the test process (2,000 clients moving to B at the same time) skews the observed times.
    drain = float(os.environ.get("DRAIN_TEST_SECONDS", "5"))
    counts = {"sse": 800, "ws": 800, "poll": 400}
    env = {
        "REDIS_URL": own_redis.url,
        "JWT_SECRET": SECRET,
        "DRAIN_SECONDS": str(drain),
        "MAX_CONNECTIONS": "0",
    }
    a, b = live_servers(env={**env, "LOG_LEVEL": "info"}), live_servers(env=env)
    admin = HttpApi(b.url, b.token("ops", "admin"))
    token = a.token("viewer")
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as http:
        head = (await http.get("/api/poll", params={"rooms": ROOM}, headers=admin.headers)).json()
    clients = [Follower(t, token, head["cursor"]) for t, n in counts.items() for _ in range(n)]
    sent: list[int] = []
    stop_publishing, done, a_gone = asyncio.Event(), asyncio.Event(), asyncio.Event()
    publisher = asyncio.create_task(_publisher(admin, sent, stop_publishing, rate=2))

    async def follow(client: Follower) -> None:
        ending = await client.session(a.port, done)
        if ending.kind == "left" or redis_gone:
            return
        # Resumed on B once A is gone: a client may come back any time later, and the ends
        # on A are timed by this process, which must not be busy resuming 2,000 clients then.
        await a_gone.wait()
        await client.session(b.port, done)

    tasks = [asyncio.create_task(follow(c)) for c in clients]
    try:
        await _until(lambda: all(c.opened.is_set() for c in clients), 60, "all open", tasks)
        await _until(lambda: all(c.got for c in clients), 30, "every client got events on A")
        if redis_gone:
            stop_publishing.set()
            await publisher
            own_redis.stop()
        gc.disable()  # a full collection over 2,000 clients would stall the timing of their ends
        try:
            since = a.sigterm()
            took = await a.exit_time(since, drain + 5)
        finally:
            gc.enable()
        a_gone.set()
        stream_ends = [c.endings[0] for c in clients if c.transport != "poll" and c.endings]
        assert len(stream_ends) == counts["sse"] + counts["ws"], "a stream was not ended"
        span, busiest, busiest_two = _spread(stream_ends, since)
        print(f"drain: exit {took:.2f} s, ends over {span:.2f} s, busiest second {busiest}")
        assert span >= drain / 2, f"ends spread over {span:.2f} s only"
        # The server ends n/DRAIN_SECONDS streams a second. The times are taken by this
        # process, which a loaded 2-core machine stalls now and then: a second's ends then
        # land in the next. So: a quarter a second with room for one such stall, and half of
        # them in any two seconds.
        assert busiest <= len(stream_ends) / 4 * 1.5, f"{busiest} of {len(stream_ends)} in 1 s"
        assert busiest_two <= len(stream_ends) / 2, f"{busiest_two} in 2 s"
        assert all(not e.reset for e in stream_ends), "a drained SSE stream got stream:reset"
        assert {e.close_code for e in stream_ends if e.kind == "ws-close"} == {1012}
        failed = [t.exception() for t in tasks if t.done() and t.exception() is not None]
        assert not failed, failed[:3]
        polls = [c.endings[0] for c in clients if c.transport == "poll" and c.endings]
        assert len(polls) == counts["poll"], "a pending long-poll was not answered"
        # With Redis stopped, a poll that was reading the log when the signal came answers
        # when that read gives up (the engine's command timeout), not at once.
        patience = took if redis_gone else 2.0
        late = Counter((e.kind, round(e.at - since, 1)) for e in polls if e.at - since >= patience)
        assert not late, f"pending long-polls waited: {late.most_common(5)}"
        if redis_gone:
            return
        await asyncio.sleep(1.0)  # announcements keep flowing after the drain, on B
        stop_publishing.set()
        await publisher
        want = list(range(len(sent)))
        await _until(lambda: all(c.got[-1:] == [want[-1]] for c in clients), 30, "all on B")
        for client in clients:
            assert client.got == want, (client.transport, "a gap or a duplicate")
    finally:
        stop_publishing.set()
        done.set()
        await asyncio.gather(*tasks, publisher, return_exceptions=True)


async def _until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    tasks: list[asyncio.Task[Ending]] | list[asyncio.Task[None]] = (),  # type: ignore[assignment]
) -> None:
    """Wait for `predicate`; a client task that failed meanwhile fails the test with its error."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise AssertionError(what) from task.exception()
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_exit_in_time_with_redis_and_the_database_blackholed(
    live_servers: Callable[..., LiveServer], own_redis: RedisServer
) -> None:
    """Both dependencies unreachable (the network drops everything, nothing is refused) when
    SIGTERM comes: the streams still end as drained and the process exits within
    DRAIN_SECONDS + 5 s."""
    drain = 2.0
    postgres = PostgresServer()
    postgres.start()
    redis_link, database_link = FaultProxy(own_redis.port).start(), None
    try:
        database_link = FaultProxy(postgres.port).start()
        server = live_servers(
            env={
                "REDIS_URL": f"redis://127.0.0.1:{redis_link.port}",
                "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{database_link.port}/postgres",
                "JWT_SECRET": SECRET,
                "DRAIN_SECONDS": str(drain),
            }
        )
        token = server.token("viewer")
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            auth = {"Authorization": f"Bearer {token}"}
            head = (await http.get("/api/poll", params={"rooms": ROOM}, headers=auth)).json()
        clients = [Follower(t, token, head["cursor"]) for t in ("sse", "ws")]
        never = asyncio.Event()
        sessions = [asyncio.create_task(c.session(server.port, never)) for c in clients]
        await _until(lambda: all(c.opened.is_set() for c in clients), 10, "streams open", sessions)
        redis_link.blackhole()
        database_link.blackhole()
        since = server.sigterm()
        sse, ws = await asyncio.wait_for(asyncio.gather(*sessions), drain + 5)
        assert sse.kind == "sse-eof" and sse.retry_ms is not None and not sse.reset
        assert (ws.kind, ws.close_code) == ("ws-close", 1012)
        took = await server.exit_time(since, drain + 5)
        print(f"exit with Redis and PostgreSQL blackholed: {took:.2f} s (DRAIN_SECONDS={drain:g})")
    finally:
        redis_link.stop()
        if database_link is not None:
            database_link.stop()
        postgres.stop()
