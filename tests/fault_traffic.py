"""Traffic for the fault suite: results POSTed throughout, and clients on all three transports
following `leaderboard:global` and `matches`, each checked for exactly-once, in-order delivery.

The clients and the check are the soak's (quart_app.loadtest.soak_clients / soak_check): a
reference reader that resumes on whichever instance answers gives the log's order; every
client must see that sequence, each event once, or be told `stream:reset`. A client whose
connection breaks resumes with its cursor on an instance that is up (the other one first).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from quart_app.loadtest.soak_check import ClientCheck, Reference, scan
from quart_app.loadtest.soak_clients import Session, SessionEnded, run_session
from quart_app.loadtest.wire import WireError, parse_target

from .services import LiveServer

ROOMS = ["leaderboard:global", "matches"]
TRANSPORTS = ("sse", "ws", "poll")


@dataclass
class Written:
    """What the writer was told, answer by answer."""

    results_ok: list[tuple[str, str | None]] = field(default_factory=list)  # (match, winner)
    statuses: Counter[str] = field(default_factory=Counter)
    # a 5xx that the contract does not allow: anything but 503 with Retry-After
    forbidden: list[str] = field(default_factory=list)
    unavailable: int = 0  # 503 with Retry-After

    def note(self, what: str, response: httpx.Response | None, when: float) -> None:
        if response is None:
            self.statuses[f"{what} no answer"] += 1
            return
        self.statuses[f"{what} {response.status_code}"] += 1
        if response.status_code == 503 and response.headers.get("retry-after"):
            self.unavailable += 1
        elif response.status_code >= 500:
            self.forbidden.append(
                f"{what} {response.status_code} at {when:.1f}s: {response.text[:200]}"
            )


@dataclass
class Watcher:
    """One client on one transport, resuming wherever it can."""

    check: ClientCheck
    transport: str
    instance: int
    token: str  # the instances share one JWT_SECRET: good on all of them
    cursor: str
    task: asyncio.Task[None] | None = None


class Traffic:
    """Start with `async with Traffic(servers, ...)`; `stop_writing()` then `settle()`."""

    def __init__(
        self,
        servers: list[LiveServer],
        per_transport: int = 2,
        pace: float = 0.05,
        players: int = 12,
    ) -> None:
        self.servers = servers
        self.targets = [parse_target(s.url) for s in servers]
        self.down: set[int] = set()  # instances the test has killed: nobody goes there again
        self.pace = pace  # seconds between two matches: a steady flow, not a flood
        self.players = [f"p{i:02d}" for i in range(players)]
        self.writer_token = servers[0].token("fault-writer", "matches:write admin")
        self.written = Written()
        self.started = time.monotonic()
        self.rng = random.Random(11)
        self._writing = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.watchers: list[Watcher] = []
        self.per_transport = per_transport

    async def __aenter__(self) -> Traffic:
        async with httpx.AsyncClient(timeout=10) as client:
            start = await client.post(
                self.servers[0].url + "/api/publish",
                json={"room": "matches", "event": "announcement", "data": {"fault": "start"}},
                headers={"Authorization": f"Bearer {self.writer_token}"},
            )
        assert start.status_code == 202, start.text
        cursor = str(start.json()["id"])
        self.reference = Reference(cursor)
        index = 0
        for transport in TRANSPORTS:
            for _ in range(self.per_transport):
                sub = f"watcher-{index}"
                watcher = Watcher(
                    ClientCheck(f"{transport}-{index}"),
                    transport,
                    index % len(self.servers),
                    self.servers[0].token(sub),
                    cursor,
                )
                self.watchers.append(watcher)
                index += 1
        self._writing.set()
        self._tasks = [
            asyncio.create_task(self._follow_reference(cursor)),
            asyncio.create_task(self._write()),
            *(asyncio.create_task(self._watch(w)) for w in self.watchers),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._writing.clear()
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def at(self) -> float:
        return time.monotonic() - self.started

    def up(self) -> list[int]:
        return [i for i in range(len(self.servers)) if i not in self.down]

    # writing ------------------------------------------------------------------------------
    async def _write(self) -> None:
        headers = {"Authorization": f"Bearer {self.writer_token}"}
        n = 0
        async with httpx.AsyncClient(timeout=15, headers=headers) as client:
            while True:
                await self._writing.wait()
                up = self.up()
                first, second = up[n % len(up)], up[(n + 1) % len(up)]
                a, b = self.rng.sample(self.players, 2)
                match_id = f"m{n:05d}"
                n += 1
                created = await self._post(
                    client,
                    first,
                    "create",
                    "/api/matches",
                    {"match_id": match_id, "player_ids": [a, b]},
                )
                if created is not None and created.status_code in (200, 201):
                    winner = self.rng.choice([a, b, None])
                    outcome = {"winner_id": winner} if winner else {"draw": True}
                    answer = await self._post(
                        client, second, "result", f"/api/matches/{match_id}/result", outcome
                    )
                    if answer is not None and answer.status_code == 200:
                        self.written.results_ok.append((match_id, winner))
                await asyncio.sleep(self.pace)  # the writer's pace

    async def _post(
        self, client: httpx.AsyncClient, instance: int, what: str, path: str, body: Any
    ) -> httpx.Response | None:
        try:
            response = await client.post(self.servers[instance].url + path, json=body)
        except httpx.HTTPError:
            response = None
        self.written.note(what, response, self.at())
        return response

    def stop_writing(self) -> None:
        self._writing.clear()

    def resume_writing(self) -> None:
        self._writing.set()

    # reading ------------------------------------------------------------------------------
    async def _follow_reference(self, cursor: str) -> None:
        rooms = ",".join(ROOMS)
        instance = 0
        async with httpx.AsyncClient(timeout=30) as client:
            while True:
                up = self.up()
                instance = instance if instance in up else up[0]
                server = self.servers[instance]
                try:
                    response = await client.get(
                        server.url + "/api/poll",
                        params={"rooms": rooms, "cursor": cursor, "timeout": "5"},
                        headers={"Authorization": f"Bearer {self.writer_token}"},
                    )
                except httpx.HTTPError:
                    response = None
                if response is None or response.status_code != 200:
                    instance = up[(up.index(instance) + 1) % len(up)]
                    await asyncio.sleep(0.2)  # a client's retry pace
                    continue
                for seen in scan(response.content):
                    self.reference.add(seen)
                cursor = str(response.json()["cursor"])

    async def _watch(self, watcher: Watcher) -> None:
        rng = random.Random(watcher.check.name)
        while True:
            up = self.up()
            if watcher.instance not in up:
                watcher.instance = up[0]
            target = self.targets[watcher.instance]
            session = Session(
                target,
                target.host,
                ROOMS,
                watcher.token,
                watcher.cursor,
                3600.0,  # stays until the connection breaks
            )
            failure: str | None = None
            try:
                await run_session(watcher.transport, session, watcher.check)
            except SessionEnded as ended:
                failure = str(ended)
            except (OSError, TimeoutError, WireError) as exc:
                failure = type(exc).__name__
            watcher.cursor = session.cursor
            watcher.check.note_session(watcher.transport, failure)
            # resume on the other instance (PROTOCOL 3: any instance, any transport)
            if len(up) > 1:
                watcher.instance = up[(up.index(watcher.instance) + 1) % len(up)]
            await asyncio.sleep(rng.uniform(0.1, 0.5))  # a reconnect delay, as EventSource's

    # checks -------------------------------------------------------------------------------
    def settle_checks(self) -> None:
        for watcher in self.watchers:
            watcher.check.settle(self.reference)

    async def caught_up(self) -> bool:
        """Every 2xx result is in the reference, and every client has checked up to its end."""
        results = {m for e, m in self.reference.events if e == "match:result"}
        if not {m for m, _ in self.written.results_ok} <= results:
            return False
        self.settle_checks()
        return all(
            w.check.expected >= len(self.reference) and not w.check.pending for w in self.watchers
        )

    def verdicts(self) -> dict[str, dict[str, Any]]:
        for watcher in self.watchers:
            watcher.check.finish(self.reference)
        return {w.check.name: w.check.summary() | {"ok": w.check.ok} for w in self.watchers}
