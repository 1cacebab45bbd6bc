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
# One publisher per room, each sending 0..N-1 one after another: per room, the log order is
# 0..N-1 (PROTOCOL 2 orders the events of one room); together they make the flow fast.
ROOMS = ("matches", "match:churn")
EVENTS = 2_000  # per room, at most: publishing stops after PUBLISH_SECONDS
CLIENTS = 6
KILL_EVERY = 3.0  # seconds between CLIENT KILL TYPE pubsub
PUBLISH_SECONDS = 25.0  # the flow lasts this long at most (a loaded machine publishes fewer)
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
    published: dict[str, int]  # filled in when publishing has ended: how many per room
    seen: dict[str, list[int]] = field(default_factory=lambda: {room: [] for room in ROOMS})
    resets: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    # what ended a session other than the client leaving: a WebSocket close, an SSE status
    failures: list[str] = field(default_factory=list)

    def take(self, envelopes: list[dict[str, Any]]) -> None:
        for envelope in envelopes:
            if envelope["event"] == "stream:reset":
                self.resets.append(envelope)
            elif envelope["event"] == "announcement":
                data = envelope["data"]
                self.seen[data["room"]].append(data["n"])
            self.cursor = envelope["id"]

    @property
    def done(self) -> bool:
        if not self.published:
            return False
        return all(
            len(self.seen[room]) >= count and (count == 0 or count - 1 in self.seen[room])
            for room, count in self.published.items()
        )

    async def run(self, deadline: float) -> None:
        instance = self.rng.randrange(len(self.servers))
        while not self.done and time.monotonic() < deadline:
            transport = self.rng.choice(TRANSPORTS)
            server = self.servers[instance]
            stay = self.rng.uniform(0.2, 1.2)
            began = time.monotonic()
            await getattr(self, f"_{transport}")(server.url, stay)
            self.sessions.append(f"{transport}@{server.port} {time.monotonic() - began:.1f}s")
            instance = 1 - instance  # resume on the other instance

    async def _sse(self, url: str, stay: float) -> None:
        async with SSEClient(url, ",".join(ROOMS), self.token, last_event_id=self.cursor) as sse:
            await asyncio.sleep(stay)  # a client that reads for a while, then drops
            await sse.close()
            if sse.status != 200:
                self.failures.append(f"SSE {sse.status} from {url}")
            self.take(sse.events)

    async def _ws(self, url: str, stay: float) -> None:
        async with WSClient(url, self.token) as ws:
            try:
                answer = await ws.subscribe(list(ROOMS), cursor=self.cursor)
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
            await ws.drop()

    async def _poll(self, url: str, stay: float) -> None:
        until = time.monotonic() + stay
        while time.monotonic() < until:
            response = await poll(url, ",".join(ROOMS), self.token, self.cursor, timeout=1)
            if response.status_code != 200:
                self.failures.append(f"poll {response.status_code} from {url}: {response.text}")
                return
            answer = response.json()
            self.take(answer["events"])
            self.cursor = answer["cursor"]


def publish_all(room: str, server_urls: list[str], token: str) -> int:
    """Announcements 0..N-1 to `room`, each answered (so in the log) before the next,
    alternating instances, for at most PUBLISH_SECONDS. Run in a thread of its own, so the
    readers' parsing in the test's event loop does not throttle the flow. Returns N."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"}
    clients = [httpx.Client(base_url=url, timeout=10, headers=headers) for url in server_urls]
    n = 0
    try:
        while n < EVENTS and time.monotonic() - started < PUBLISH_SECONDS:
            body = {"room": room, "event": "announcement", "data": {"room": room, "n": n}}
            response = clients[n % len(clients)].post("/api/publish", json=body)
            assert response.status_code == 202, response.text
            n += 1
    finally:
        for client in clients:
            client.close()
    return n


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
    starter = servers[0].token("starter")
    start = (await poll(servers[0].url, ",".join(ROOMS), starter)).json()["cursor"]
    published: dict[str, int] = {}
    churners = [
        Churner(
            f"c{i}",
            servers,
            servers[0].token(f"viewer-{i}"),
            start,
            random.Random(rng.random()),
            published,
        )
        for i in range(CLIENTS)
    ]
    stop_killing = asyncio.Event()
    killer = asyncio.create_task(kill_pubsub_until(redis_server, stop_killing))
    deadline = time.monotonic() + PUBLISH_SECONDS + CATCH_UP_DEADLINE
    readers = [asyncio.create_task(c.run(deadline)) for c in churners]
    try:
        urls = [s.url for s in servers]
        started = time.monotonic()
        counts = await asyncio.gather(
            *(asyncio.to_thread(publish_all, room, urls, admin) for room in ROOMS)
        )
        rate = sum(counts) / (time.monotonic() - started)
        published.update(zip(ROOMS, counts, strict=True))
        await asyncio.wait_for(asyncio.gather(*readers), CATCH_UP_DEADLINE + PUBLISH_SECONDS)
    finally:
        stop_killing.set()
        kills = await killer
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    print(f"published {published} at {rate:.0f}/s; pub/sub connections killed: {kills}")
    report = {}
    for churner in churners:
        seen = churner.seen.values()
        report[churner.name] = {
            "sessions": len(churner.sessions),
            "duplicates": sum(len(ns) - len(set(ns)) for ns in seen),
            "out_of_order": sum(
                1 for ns in seen for x, y in zip(ns, ns[1:], strict=False) if y <= x
            ),
            "missing": [
                sorted(set(range(published[room])) - set(churner.seen[room]))[:10] for room in ROOMS
            ],
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
        ) == (0, 0, [[]] * len(ROOMS), [], []), (name, row)
        sessions = next(c.sessions for c in churners if c.name == name)
        assert row["sessions"] >= 5, (name, sessions)  # it really churned
    assert min(published.values()) >= 500, published  # the flow was a flood, not a trickle
    for churner in churners:
        assert churner.seen == {room: list(range(n)) for room, n in published.items()}
    assert kills >= 4, kills  # both instances lost their subscriptions, more than once
