"""What the tests share besides fixtures: a JSON client with tokens, and readers of the truth
(SQL) and of the derived state (the engine's board and log)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from quart import Quart

from quart_app.engine.base import BoardEntry, Engine
from quart_app.runtime import Runtime
from quart_app.store.database import Store
from quart_app.store.seed import seed_players
from quart_app.store.tables import matches, outbox, players

SECRET = "test-secret-" + "x" * 32
WRITE = "matches:write"
ADMIN = "admin"


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any
    content_type: str


class Api:
    """One started app: a test client that sends JSON with a token, and the app's runtime."""

    def __init__(self, app: Quart, client: Any) -> None:
        self.app = app
        self.client = client
        self.rt: Runtime = app.extensions["pulse"]
        self.writer = self.token("game-server", WRITE)
        self.admin = self.token("operator", ADMIN)
        self.reader = self.token("watcher")

    def token(self, sub: str, scope: str = "", ttl_seconds: int = 3600) -> str:
        return self.rt.auth.issue(sub, scope, ttl_seconds)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "writer",
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """`token` is a token, an attribute name ("writer", "admin", "reader") or None."""
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {getattr(self, token, token)}")
        kwargs: dict[str, Any] = {"headers": sent}
        if data is not None:
            kwargs["data"] = data
        elif body is not None:
            kwargs["json"] = body
        response = await self.client.open(path, method=method, **kwargs)
        raw = await response.get_data()
        parsed = json.loads(raw) if raw and response.mimetype.endswith("json") else raw
        return Reply(response.status_code, parsed, response.headers, response.mimetype)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return await self.request("POST", path, body, **kwargs)

    async def put(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return await self.request("PUT", path, body, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        kwargs.setdefault("token", "reader")
        return await self.request("GET", path, **kwargs)

    # shortcuts for the common happy paths -------------------------------------------------
    async def create(self, match_id: str, a: str, b: str) -> dict[str, Any]:
        reply = await self.post("/api/matches", {"match_id": match_id, "player_ids": [a, b]})
        assert reply.status in (200, 201), reply
        body: dict[str, Any] = reply.body
        return body

    async def result(self, match_id: str, winner: str | None) -> dict[str, Any]:
        outcome = {"draw": True} if winner is None else {"winner_id": winner}
        reply = await self.post(f"/api/matches/{match_id}/result", outcome)
        assert reply.status == 200, reply
        body: dict[str, Any] = reply.body
        return body

    async def play(self, match_id: str, a: str, b: str, winner: str | None) -> dict[str, Any]:
        await self.create(match_id, a, b)
        return await self.result(match_id, winner)


@asynccontextmanager
async def serving(app: Quart, *, settled: bool = True) -> AsyncIterator[Api]:
    async with app.test_app() as test_app:
        api = Api(app, test_app.test_client())
        if settled:
            # Tests read the log from its head: start once the start-up load (which appends
            # a `board:rebuilt` marker) is done, as a client would see a settled instance.
            async with asyncio.timeout(30):
                await api.rt.board_loaded()
        yield api


# reading state -------------------------------------------------------------------------------
async def sql_players(store: Store) -> dict[str, dict[str, Any]]:
    rows = await store.db.fetch_all(sa.select(players))
    return {row.player_id: dict(row._mapping) for row in rows}


async def sql_matches(store: Store) -> dict[str, dict[str, Any]]:
    rows = await store.db.fetch_all(sa.select(matches))
    return {row.match_id: dict(row._mapping) for row in rows}


async def outbox_count(store: Store) -> int:
    return int(await store.db.fetch_val(sa.select(sa.func.count()).select_from(outbox)))


async def board(engine: Engine) -> list[tuple[int, BoardEntry]]:
    ranked, total = await engine.board_page(0, 1_000_000)
    assert len(ranked) == total
    return ranked


def expected_board(rows: dict[str, dict[str, Any]]) -> list[tuple[int, str, float]]:
    """SQL's players in the documented order: rating descending, ties by player id."""
    ordered = sorted(rows.values(), key=lambda row: (-row["rating"], row["player_id"]))
    return [(rank, row["player_id"], row["rating"]) for rank, row in enumerate(ordered, 1)]


def board_view(ranked: list[tuple[int, BoardEntry]]) -> list[tuple[int, str, float]]:
    return [(rank, entry.player_id, entry.rating) for rank, entry in ranked]


async def board_matches_sql(rt: Runtime) -> bool:
    rows = await sql_players(rt.store)
    ranked = await board(rt.engine)
    if board_view(ranked) != expected_board(rows):
        return False
    return all(
        (e.name, e.wins, e.losses, e.draws, e.games, e.version)
        == tuple(
            rows[e.player_id][k] for k in ("name", "wins", "losses", "draws", "games", "version")
        )
        for _, e in ranked
    )


async def log_events(engine: Engine) -> list[dict[str, Any]]:
    """Every event the log still holds that a client could receive, oldest first, parsed.

    Internal markers (an event of no room, such as a rebuild's `board:rebuilt`) reach no
    client and are left out."""
    events: list[dict[str, Any]] = []
    seq = 0
    while True:
        batch = await engine.read_after(seq, 500)
        if not batch:
            return events
        events += [json.loads(event.text) for event in batch if event.rooms]
        seq = batch[-1].seq


async def eventually(
    check: Callable[[], Awaitable[object]], timeout: float, what: str, interval: float = 0.02
) -> float:
    """Wait until `check()` is truthy; fail naming `what` after `timeout` s, with the last value
    it returned or the last exception it raised (a dependency coming back may fail a few
    checks: that is retried, not hidden). Returns the wait."""
    started = time.monotonic()
    last: str = "no check finished"
    while True:
        try:
            value = await check()
            if value:
                return time.monotonic() - started
            last = f"last value: {value!r}"
        except Exception as error:  # noqa: BLE001 - retried; reported if it never clears
            last = f"last exception: {error!r}"
            cause: BaseException | None = error
        else:
            cause = None
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; {last}"
            ) from cause
        await asyncio.sleep(interval)


def assert_problem(reply: Reply, status: int) -> None:
    """PROTOCOL section 7: application/problem+json with type, title, status and detail."""
    assert reply.status == status, reply
    assert reply.content_type == "application/problem+json", reply
    assert set(reply.body) >= {"type", "title", "status", "detail"}, reply.body
    assert reply.body["status"] == status
    assert isinstance(reply.body["title"], str) and reply.body["title"]
    assert isinstance(reply.body["detail"], str) and reply.body["detail"]


# seeding and polling -----------------------------------------------------------------------
async def seed_sqlite(url: str, players: int) -> None:
    """`players` players straight into the (migrated) database at `url`, in bulk."""
    store = Store(url)
    await store.connect(migrate=True)
    try:
        await seed_players(store, players)
    finally:
        await store.disconnect()


async def app_poll(
    api: Api, room: str, cursor: str | None = None, timeout: float = 10
) -> dict[str, Any]:
    """One long-poll through the app under test, as the reader; its answer, parsed."""
    path = f"/api/poll?rooms={room}&timeout={timeout:g}"
    if cursor:
        path += f"&cursor={cursor}"
    response = await api.client.get(path, headers={"Authorization": f"Bearer {api.reader}"})
    assert response.status_code == 200
    answer: dict[str, Any] = json.loads(await response.get_data())
    return answer


class LoopTurns:
    """Counts turns of the event loop: a callback that schedules itself once per turn."""

    def __init__(self) -> None:
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


def lane_requests(base_url: str, path: str = "/api/poll") -> int:
    """How many requests for `path` the fast lane of the real instance at `base_url` has taken
    (its /metrics count): a request is counted when the lane takes it, so a test can wait for
    a long-poll to be pending on the server instead of sleeping."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=20) as answer:
        text = answer.read().decode()
    series = 'rankpulse_fast_lane_requests_total{path="' + path + '"} '
    found = re.search("^" + re.escape(series) + r"(\S+)$", text, re.M)
    return int(float(found.group(1))) if found else 0


async def lane_took(base_url: str, count: int, timeout: float = 10) -> None:
    """Wait until the fast lane of the instance at `base_url` has taken `count` long-polls in
    all (lane_requests): the poll a test sent is then pending on the server."""
    await eventually(
        lambda: asyncio.to_thread(lambda: lane_requests(base_url) >= count),
        timeout,
        f"{count} polls taken by the server",
    )
