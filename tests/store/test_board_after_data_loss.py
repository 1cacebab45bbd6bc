"""Issue 7 item 4: a board is never served stale or partial, judged by content against SQL.

After Redis loses its data the first write starts a new epoch; until the rebuild from SQL has
swapped in the whole board, snapshots and reads must still show every player (they come from
SQL meanwhile), and once the rebuild is done every board watcher, on every instance, gets a
fresh `leaderboard:initial` equal to SQL. Renames are changes like any other: visible in the
next new client's snapshot, and announced with a `leaderboard:update`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from quart import Quart

from quart_app.domain.ids import GLOBAL_BOARD
from quart_app.engine.hub import Connection
from quart_app.store.rebuild import rebuild

from ..helpers import Api, expected_board, log_events, serving, sql_players
from ..services import RedisServer

PLAYERS = ["ann", "bob", "cat", "dan", "eve", "fay"]


def view(entries: list[dict[str, Any]]) -> list[tuple[int, str, float]]:
    return [(e["rank"], e["player_id"], e["rating"]) for e in entries]


async def sql_view(api: Api) -> list[tuple[int, str, float]]:
    return expected_board(await sql_players(api.rt.store))


async def new_client_snapshot(api: Api) -> dict[str, Any]:
    """What a new client gets: a long-poll without a cursor answers with leaderboard:initial."""
    reply = await api.get(f"/api/poll?rooms={GLOBAL_BOARD}")
    assert reply.status == 200, reply
    [initial] = [e for e in reply.body["events"] if e["event"] == "leaderboard:initial"]
    data: dict[str, Any] = initial["data"]
    return data


async def assert_reads_equal_sql(api: Api, when: str) -> None:
    want = await sql_view(api)
    snapshot = await new_client_snapshot(api)
    assert (view(snapshot["entries"]), snapshot["total"]) == (want, len(want)), when
    page = (await api.get("/api/leaderboard")).body
    assert (view(page["entries"]), page["total"]) == (want, len(want)), when
    for rank, player_id, rating in want:
        player = (await api.get(f"/api/players/{player_id}")).body
        assert (player["rank"], player["rating"]) == (rank, rating), when
        around = (await api.get(f"/api/players/{player_id}/around?radius=2")).body
        assert view(around["entries"]) == want[max(0, rank - 3) : rank + 2], when


async def initial_equal_to_sql(api: Api, conn: Connection, timeout: float) -> dict[str, Any]:
    """Read the watcher's stream until a leaderboard:initial equal to SQL arrives."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        for event in await conn.next_batch(timeout=max(0.01, deadline - time.monotonic())):
            seen.append(event.name)
            if event.name == "leaderboard:initial":
                data: dict[str, Any] = json.loads(event.text)["data"]
                if view(data["entries"]) == await sql_view(api):
                    return data
        await asyncio.sleep(0)
    raise AssertionError(f"no leaderboard:initial equal to SQL within {timeout}s; saw {seen}")


@pytest.fixture(name="two_apps")
async def _two_apps(
    make_app: Callable[..., Quart], redis_url: str
) -> AsyncIterator[tuple[Api, Api]]:
    """Two instances sharing Redis and the SQL database. backfill_interval is long so that the
    automatic rebuild after a data loss waits: the test looks at the window before it."""
    async with (
        serving(make_app(redis_url=redis_url, backfill_interval=30)) as a,
        serving(make_app(redis_url=redis_url, backfill_interval=30)) as b,
    ):
        yield a, b


async def seed(api: Api) -> None:
    for number in range(len(PLAYERS) - 1):
        winner = PLAYERS[number] if number % 2 else None
        await api.play(f"seed{number}", PLAYERS[number], PLAYERS[number + 1], winner)
    await api.create("after-loss", "ann", "fay")


async def test_after_redis_data_loss_every_read_equals_sql(
    two_apps: tuple[Api, Api], redis_server: RedisServer
) -> None:
    a, b = two_apps
    await seed(a)
    await assert_reads_equal_sql(a, "before the loss")
    watcher_a = a.rt.hub.open(None, [GLOBAL_BOARD], None)
    watcher_b = b.rt.hub.open(None, [GLOBAL_BOARD], None)

    redis_server.cli("FLUSHALL")  # Redis loses its data
    await a.result("after-loss", "fay")  # the first write starts a new epoch

    # The rebuild has not run (backfill_interval is long): the Redis board holds only the
    # two rows of that write. Every read still shows the whole board, as SQL has it.
    prefix = a.rt.settings.redis_prefix
    assert int(redis_server.cli("ZCARD", f"{prefix}board")) == 2
    await assert_reads_equal_sql(a, "after the first write, before the rebuild")
    await assert_reads_equal_sql(b, "on the other instance, before the rebuild")

    assert await rebuild(a.rt.store, a.rt.engine, a.rt.relay) == len(PLAYERS)
    await assert_reads_equal_sql(a, "after the rebuild")
    await assert_reads_equal_sql(b, "on the other instance, after the rebuild")
    # Watchers on both instances learn of the restored board, with its content.
    for conn in (watcher_a, watcher_b):
        data = await initial_equal_to_sql(a, conn, timeout=10)
        assert data["total"] == len(PLAYERS)


async def test_automatic_rebuild_after_data_loss_refreshes_watchers(
    make_app: Callable[..., Quart], redis_url: str, redis_server: RedisServer
) -> None:
    async with (
        serving(make_app(redis_url=redis_url, backfill_interval=0.2)) as a,
        serving(make_app(redis_url=redis_url, backfill_interval=0.2)) as b,
    ):
        await seed(a)
        watcher_b = b.rt.hub.open(None, [GLOBAL_BOARD], None)
        redis_server.cli("FLUSHALL")
        await a.result("after-loss", "fay")
        await assert_reads_equal_sql(b, "right after the first write")
        await initial_equal_to_sql(a, watcher_b, timeout=15)
        await assert_reads_equal_sql(a, "after the automatic rebuild")


async def test_rename_shows_in_the_next_snapshot_and_emits_an_update(api: Api) -> None:
    await api.play("m1", "ann", "bob", "ann")
    await api.play("m2", "cat", "ann", None)
    before = await new_client_snapshot(api)  # caches the snapshot at this log position
    ranks = {e["player_id"]: e["rank"] for e in before["entries"]}
    version = (await sql_players(api.rt.store))["ann"]["version"]

    reply = await api.put("/api/players/ann", {"name": "Annie"}, token="admin")
    assert reply.status == 200, reply

    after = await new_client_snapshot(api)
    names = {e["player_id"]: e["name"] for e in after["entries"]}
    assert names["ann"] == "Annie"
    [update] = [e for e in await log_events(api.rt.engine) if e["event"] == "leaderboard:update"][
        -1:
    ]
    [change] = update["data"]["changes"]
    assert update["data"]["match_id"] is None
    assert change["player_id"] == "ann" and change["name"] == "Annie"
    assert change["delta"] == 0
    assert change["rank"] == change["previous_rank"] == ranks["ann"]
    assert change["version"] == version + 1
