"""Issue 7 item 5: two instances publish two results of one player in the opposite order of
their commits. The board keeps the newer row, and the change rows carry versions by which a
client (keeping per player the highest version it saw) ends on the newer row too."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from quart import Quart

from quart_app.domain.ids import GLOBAL_BOARD
from quart_app.engine.base import Publication
from quart_app.engine.hub import Connection

from ..helpers import Api, serving, sql_players


def client_model(updates: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rule of static/board.js and pulse.js: per player, the row of the highest version."""
    rows: dict[str, dict[str, Any]] = {}
    for update in updates:
        for change in update["changes"]:
            held = rows.get(change["player_id"])
            if held is None or change["version"] > held["version"]:
                rows[change["player_id"]] = change
    return rows


async def board_updates(conn: Connection, count: int) -> list[dict[str, Any]]:
    updates: list[dict[str, Any]] = []
    while len(updates) < count:
        batch = await conn.next_batch(timeout=10)
        assert batch, f"only {len(updates)} of {count} leaderboard:update arrived"
        updates += [json.loads(e.text)["data"] for e in batch if e.name == "leaderboard:update"]
    return updates


async def test_results_published_out_of_commit_order_end_on_the_newer_row(
    make_app: Callable[..., Quart], redis_url: str
) -> None:
    async with (
        serving(make_app(redis_url=redis_url)) as a,
        serving(make_app(redis_url=redis_url)) as b,
    ):
        await a.create("m1", "ann", "bob")
        await b.create("m2", "ann", "cat")
        watcher = a.rt.hub.open(None, [GLOBAL_BOARD], None)

        # Hold back both instances' publications (as if their relays were slow), commit
        # result 1 on a, then result 2 on b.
        held: list[Publication] = []

        async def hold(publication: Publication) -> bool:
            held.append(publication)
            return True

        async def hold_many(publications: list[Publication]) -> list[bool]:
            return [await hold(publication) for publication in publications]

        for api in (a, b):
            await api.rt.relay.stop()
            api.rt.relay.publish = hold  # type: ignore[method-assign]
            api.rt.relay.publish_many = hold_many  # type: ignore[method-assign]
        await a.result("m1", "ann")
        await b.result("m2", "cat")
        first, second = held
        newest = (await sql_players(a.rt.store))["ann"]

        # Deliver them the other way round: b's (newer) first, then a's (older).
        await b.rt.engine.publish(second)
        await a.rt.engine.publish(first)

        rank_and_row = await a.rt.engine.board_player("ann")
        assert rank_and_row is not None
        entry = rank_and_row[1]
        assert (entry.rating, entry.version) == (newest["rating"], newest["version"])

        updates = await board_updates(watcher, 2)
        arrived = [c for u in updates for c in u["changes"] if c["player_id"] == "ann"]
        assert [c["version"] for c in arrived] == [newest["version"], newest["version"] - 1]
        assert client_model(updates)["ann"]["rating"] == newest["rating"]
        page = (await a.get("/api/leaderboard")).body["entries"]
        assert {e["player_id"]: e["rating"] for e in page}["ann"] == newest["rating"]


async def test_every_change_row_carries_the_players_version(api: Api) -> None:
    watcher = api.rt.hub.open(None, [GLOBAL_BOARD], None)
    await api.play("m1", "ann", "bob", "ann")  # newcomers, then a result
    assert (await api.put("/api/players/bob", {"name": "Bobby"}, token="admin")).status == 200
    updates = await board_updates(watcher, 3)
    versions = [[(c["player_id"], c["version"]) for c in u["changes"]] for u in updates]
    assert versions == [[("ann", 1), ("bob", 1)], [("ann", 2), ("bob", 2)], [("bob", 3)]]
    sql = await sql_players(api.rt.store)
    assert client_model(updates) == {
        pid: next(c for u in reversed(updates) for c in u["changes"] if c["player_id"] == pid)
        for pid in sql
    }
