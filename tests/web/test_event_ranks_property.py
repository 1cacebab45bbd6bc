"""Ranks in events (issue 8), on both engines: after any sequence of results (ties: everyone
starts at 1200; draws), new players and renames, every rank an event carries
(`leaderboard:update` rank and previous_rank, `leaderboard:player_rank`, `player:stats_update`)
equals the player's rank on a board rebuilt from SQL at that point of the log: `rank` as SQL
stands right after the change, `previous_rank` as it stood right before."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quart_app.engine.base import Event

from ..helpers import Api, sql_players

PLAYERS = [f"p{i}" for i in range(6)]
action = st.one_of(
    st.tuples(
        st.sampled_from(PLAYERS),
        st.sampled_from(PLAYERS),
        st.sampled_from(["win", "draw", "draw", "loss"]),
    ).filter(lambda m: m[0] != m[1]),
    st.tuples(st.just("rename"), st.sampled_from(PLAYERS), st.text("abc", max_size=3)),
)
numbers = itertools.count()
RANKED = ("leaderboard:update", "leaderboard:player_rank", "player:stats_update")


def sql_ranks(rows: dict[str, dict[str, Any]]) -> dict[str, int]:
    """The board rebuilt from SQL: rating descending, ties by player id (README)."""
    ordered = sorted(rows.values(), key=lambda row: (-row["rating"], row["player_id"]))
    return {row["player_id"]: rank for rank, row in enumerate(ordered, 1)}


class Feed:
    """Every event the engine delivers, awaitable by a condition (with a timeout)."""

    def __init__(self, seen: int) -> None:
        self.events: list[Event] = []
        self.seen = seen  # the newest seq delivered (the head when attached)
        self._changed = asyncio.Event()

    def __call__(self, events: list[Event]) -> None:
        self.events.extend(events)
        self.seen = max(self.seen, events[-1].seq)
        self._changed.set()

    async def wait_for_head(self, api: Api, timeout: float = 10.0) -> None:
        head = await api.rt.engine.head()
        deadline = time.monotonic() + timeout
        while self.seen < head:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"events up to {head} did not arrive"
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def take(self) -> list[dict[str, Any]]:
        taken = [json.loads(event.text) for event in self.events if event.name in RANKED]
        self.events.clear()
        return taken


def carried_ranks(envelope: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    """(player, "rank" or "previous_rank", value) for every rank in an event."""
    data = envelope["data"]
    rows = data["changes"] if envelope["event"] == "leaderboard:update" else [data]
    found = []
    for row in rows:
        found.append((row["player_id"], "rank", row["rank"]))
        if "previous_rank" in row:
            found.append((row["player_id"], "previous_rank", row["previous_rank"]))
    return found


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(action, min_size=1, max_size=10))
async def test_every_rank_in_an_event_is_the_rank_on_a_board_rebuilt_from_sql(
    api: Api, actions: list[tuple[str, str, str]]
) -> None:
    feed = getattr(api, "_rank_feed", None)
    if feed is None:  # one app for the whole test: ever longer histories, many ties
        feed = Feed(await api.rt.engine.head())
        api.rt.engine.listen(feed)
        api._rank_feed = feed  # type: ignore[attr-defined]
    await feed.wait_for_head(api)
    feed.take()

    async def check(change: Any) -> None:
        before = sql_ranks(await sql_players(api.rt.store))
        await change
        after = sql_ranks(await sql_players(api.rt.store))
        await feed.wait_for_head(api)
        for envelope in feed.take():
            for player, field, value in carried_ranks(envelope):
                expected = after[player] if field == "rank" else before.get(player)
                assert value == expected, (envelope, field, before, after)

    for first, second, what in actions:
        if first == "rename":
            await check(api.put(f"/api/players/{second}", {"name": what or "x"}, token="admin"))
        else:
            match_id = f"r{next(numbers)}"
            await check(api.create(match_id, first, second))  # newcomers join the board
            winner = {"win": first, "loss": second, "draw": None}[what]
            await check(api.result(match_id, winner))
