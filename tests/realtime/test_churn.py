"""Churn with real processes: two instances sharing one Redis, clients that keep dropping and
resuming on the other instance over a random transport (SSE, long-poll, WebSocket) while
announcements flow fast and the Redis pub/sub connections are killed every few seconds.

PROTOCOL 2: a resumed client never sees an event twice across the reconnect, and events of one
room arrive in the order they were published. So every client must end up with every
announcement exactly once, in order: the whole sequence 0..N-1, nothing more."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from ..clients import SSEClient, WSClient, poll
from ..services import LiveServer, RedisServer

SECRET = "churn-test-secret-0123456789-abcdef"
ROOM = "matches"
EVENTS = 2_000  # announcements, published one after another (the log order is 0..N-1)
CLIENTS = 6
KILL_EVERY = 3.0  # seconds between CLIENT KILL TYPE pubsub
PUBLISH_DEADLINE = 45.0  # a bound on the publishing phase on a loaded 2-core machine
CATCH_UP_DEADLINE = 30.0  # after the last publish, for every client to reach it
TRANSPORTS = ("sse", "poll", "ws")


@dataclass
class Churner:
    """One client: reads for a short random while, drops, resumes from its last cursor on the
    other instance with a random transport, until it has seen the last announcement."""

    name: str
    servers: list[LiveServer]
    token: str
    cursor: str
    rng: random.Random
    seen: list[int] = field(default_factory=list)
    resets: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    # what ended a session other than the client leaving: a WebSocket close, an SSE status
    failures: list[str] = field(default_factory=list)

    def take(self, envelopes: list[dict[str, Any]]) -> None:
        for envelope in envelopes:
            if envelope["event"] == "stream:reset":
                self.resets.append(envelope)
            elif envelope["event"] == "announcement":
                self.seen.append(envelope["data"]["n"])
            self.cursor = envelope["id"]

    @property
    def done(self) -> bool:
        return bool(self.seen) and self.seen[-1] == EVENTS - 1

    async def run(self, deadline: float) -> None:
        instance = self.rng.randrange(len(self.servers))
        while not self.done and time.monotonic() < deadline:
            transport = self.rng.choice(TRANSPORTS)
            server = self.servers[instance]
            self.sessions.append(f"{transport}@{server.port}")
            stay = self.rng.uniform(0.2, 1.2)
            await getattr(self, f"_{transport}")(server.url, stay)
            instance = 1 - instance  # resume on the other instance

    async def _sse(self, url: str, stay: float) -> None:
        async with SSEClient(url, ROOM, self.token, last_event_id=self.cursor) as sse:
            await asyncio.sleep(stay)  # a client that reads for a while, then drops
            await sse.close()
            if sse.status != 200:
                self.failures.append(f"SSE {sse.status} from {url}")
            self.take(sse.events)

    async def _ws(self, url: str, stay: float) -> None:
        async with WSClient(url, self.token) as ws:
            try:
                answer = await ws.subscribe([ROOM], cursor=self.cursor)
                assert answer.get("type") == "subscribed", answer
                until = time.monotonic() + stay
                while (left := until - time.monotonic()) > 0:
                    try:
                        await ws.recv(timeout=left)
                    except TimeoutError:
                        break
            except websockets.ConnectionClosed as closed:
                # go on as a client would (resume), so the final check also tells what was lost
                self.failures.append(f"WebSocket closed by {url}: {closed}")
            self.take(ws.events)

    async def _poll(self, url: str, stay: float) -> None:
        until = time.monotonic() + stay
        while time.monotonic() < until:
            response = await poll(url, ROOM, self.token, self.cursor, timeout=1)
            if response.status_code != 200:
                self.failures.append(f"poll {response.status_code} from {url}: {response.text}")
                return
            answer = response.json()
            self.take(answer["events"])
            self.cursor = answer["cursor"]


def publish_all(server_urls: list[str], token: str) -> float:
    """Announcements 0..N-1, each answered (so in the log) before the next, alternating
    instances. Run in a thread of its own, so the readers' parsing in the test's event loop
    does not throttle the flow. Returns the achieved rate."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.Client(base_url=url, timeout=10, headers=headers) for url in server_urls]
    try:
        for n in range(EVENTS):
            body = {"room": ROOM, "event": "announcement", "data": {"n": n}}
            response = clients[n % len(clients)].post("/api/publish", json=body)
            assert response.status_code == 202, response.text
            assert time.monotonic() - started < PUBLISH_DEADLINE, f"published only {n}"
    finally:
        for client in clients:
            client.close()
    return EVENTS / (time.monotonic() - started)


async def kill_pubsub_until(redis: RedisServer, stop: asyncio.Event) -> int:
    kills = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), KILL_EVERY)
        except TimeoutError:
            killed = await asyncio.to_thread(redis.cli, "CLIENT", "KILL", "TYPE", "pubsub")
            kills += int(killed)
    return kills


async def test_clients_churning_across_instances_get_every_event_once_in_order(
    live_servers: Callable[..., LiveServer], redis_url: str, redis_server: RedisServer
) -> None:
    env = {"REDIS_URL": redis_url, "JWT_SECRET": SECRET}
    servers = [live_servers(env=env), live_servers(env=env)]
    admin = servers[0].token("ops", "admin")
    rng = random.Random(7)
    # Everyone starts from the same position, taken before the first announcement.
    start = (await poll(servers[0].url, ROOM, servers[0].token("starter"))).json()["cursor"]
    churners = [
        Churner(
            f"c{i}", servers, servers[0].token(f"viewer-{i}"), start, random.Random(rng.random())
        )
        for i in range(CLIENTS)
    ]
    stop_killing = asyncio.Event()
    killer = asyncio.create_task(kill_pubsub_until(redis_server, stop_killing))
    deadline = time.monotonic() + PUBLISH_DEADLINE + CATCH_UP_DEADLINE
    readers = [asyncio.create_task(c.run(deadline)) for c in churners]
    try:
        rate = await asyncio.to_thread(publish_all, [s.url for s in servers], admin)
        await asyncio.wait_for(asyncio.gather(*readers), CATCH_UP_DEADLINE + PUBLISH_DEADLINE)
    finally:
        stop_killing.set()
        kills = await killer
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    print(f"published {EVENTS} at {rate:.0f}/s; pub/sub connections killed: {kills}")
    report = {}
    for churner in churners:
        seen = churner.seen
        report[churner.name] = {
            "sessions": len(churner.sessions),
            "duplicates": len(seen) - len(set(seen)),
            "out_of_order": sum(1 for x, y in zip(seen, seen[1:], strict=False) if y <= x),
            "missing": sorted(set(range(EVENTS)) - set(seen))[:10],
            "resets": [reset["data"] for reset in churner.resets][:3],
            "failures": churner.failures[:3],
        }
    print(report)
    for name, row in report.items():
        assert (
            row["duplicates"],
            row["out_of_order"],
            row["missing"],
            row["resets"],
            row["failures"],
        ) == (0, 0, [], [], []), (name, row)
        assert row["sessions"] >= 5, (name, row)  # it really churned
    assert all(churner.seen == list(range(EVENTS)) for churner in churners)
    assert kills >= 4, kills  # both instances lost their subscriptions, more than once
