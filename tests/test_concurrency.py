"""Two instances (two apps, each with its own Runtime) sharing one Redis and one database act as
one service: concurrent results are all counted, each once, and the ratings are those of a
sequential replay in the order the database committed them."""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from quart import Quart

from quart_app.domain import elo

from .helpers import (
    Api,
    board_matches_sql,
    eventually,
    log_events,
    serving,
    sql_matches,
    sql_players,
)

K, INITIAL = 32.0, 1200.0


@asynccontextmanager
async def two_instances(
    make_app: Callable[..., Quart], redis_url: str, database_url: str
) -> AsyncIterator[tuple[Api, Api]]:
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            serving(make_app(redis_url=redis_url, database_url=database_url))
        )
        second = await stack.enter_async_context(
            serving(make_app(redis_url=redis_url, database_url=database_url))
        )
        assert first.rt is not second.rt
        yield first, second


@pytest.fixture(name="instances")
async def _instances(
    make_app: Callable[..., Quart], redis_url: str, database_url: str
) -> AsyncIterator[tuple[Api, Api]]:
    async with two_instances(make_app, redis_url, database_url) as pair:
        yield pair


async def published(api: Api) -> bool:
    """Every committed change is in the log. Requests publish before they answer, but one
    that took over a second under load leaves its row to the relay: publish those now."""
    return await api.rt.relay.flush() == 0


def commit_order(events: list[dict[str, Any]]) -> list[str]:
    """The matches in an order the database could have committed them, from the log.

    Every result bumps both players' `games` in the same transaction that reads their ratings,
    under a row lock (FOR UPDATE, or SQLite's single writer); its `player:stats_update` events
    say the count each player reached. So, per player, `games` numbers the player's results in
    commit order. Results of disjoint players commute (ELO looks only at the two ratings), so
    any order that keeps every player's own sequence replays to the same ratings: a
    topological sort of the per-player chains (and it fails if the chains contradict).
    """
    chains: dict[str, dict[int, str]] = defaultdict(dict)
    current: str | None = None
    for event in events:
        if event["event"] == "match:result":
            current = event["data"]["match_id"]
        elif event["event"] == "player:stats_update":
            # A publication's events are appended together: these follow their match:result.
            assert current is not None
            player, games = event["data"]["player_id"], event["data"]["games"]
            assert games not in chains[player], f"{player} reached {games} games twice"
            chains[player][games] = current
    after: dict[str, set[str]] = defaultdict(set)
    waiting: dict[str, int] = defaultdict(int)
    matches: set[str] = set()
    for player, chain in chains.items():
        assert sorted(chain) == list(range(1, len(chain) + 1)), f"a gap in {player}'s games"
        ordered = [chain[n] for n in sorted(chain)]
        matches.update(ordered)
        for earlier, later in zip(ordered, ordered[1:], strict=False):
            if later not in after[earlier]:
                after[earlier].add(later)
                waiting[later] += 1
    ready = [m for m in matches if waiting[m] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        match_id = heapq.heappop(ready)
        order.append(match_id)
        for later in after[match_id]:
            waiting[later] -= 1
            if waiting[later] == 0:
                heapq.heappush(ready, later)
    assert len(order) == len(matches), "the per-player orders contradict each other"
    return order


def replay(order: list[str], matches: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    players: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"rating": INITIAL, "wins": 0, "losses": 0, "draws": 0, "games": 0}
    )
    for match_id in order:
        row = matches[match_id]
        a, b = players[row["player_a"]], players[row["player_b"]]
        score = 0.5 if row["draw"] else (1.0 if row["winner_id"] == row["player_a"] else 0.0)
        a["rating"], b["rating"], delta = elo.apply_result(a["rating"], b["rating"], score, K)
        assert row["rating_change_a"] == delta, f"{match_id} was computed from other ratings"
        for player, points in ((a, score), (b, 1.0 - score)):
            player["games"] += 1
            player["wins" if points == 1.0 else "losses" if points == 0.0 else "draws"] += 1
    return dict(players)


@pytest.mark.parametrize(
    "db_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_concurrent_results_through_two_instances_equal_a_sequential_replay(
    instances: tuple[Api, Api],
) -> None:
    first, second = instances
    rng = random.Random(20_240_611)
    players = [f"p{i:02d}" for i in range(20)]
    games = []
    for number in range(200):
        a, b = rng.sample(players, 2)
        games.append((f"m{number:03d}", a, b, rng.choice([a, b, a, b, None])))

    # creates, concurrently, through both instances (many players appear in several at once)
    created = await asyncio.gather(
        *(
            (first if n % 2 else second).post("/api/matches", {"match_id": m, "player_ids": [a, b]})
            for n, (m, a, b, _) in enumerate(games)
        )
    )
    assert [reply.status for reply in created] == [201] * 200

    # 200 results at once, alternating between the instances
    results = await asyncio.gather(
        *(
            (first if n % 2 else second).post(
                f"/api/matches/{m}/result", {"draw": True} if w is None else {"winner_id": w}
            )
            for n, (m, _, _, w) in enumerate(games)
        )
    )
    assert [reply.status for reply in results] == [200] * 200, [
        r.body for r in results if r.status != 200
    ][:3]

    # SQL: every result counted once, and the ratings are those of a sequential replay
    matches = await sql_matches(first.rt.store)
    assert all(row["status"] == "completed" for row in matches.values())
    assert await published(first)
    events = await log_events(first.rt.engine)
    order = commit_order(events)
    assert sorted(order) == sorted(m for m, *_ in games)
    expected = replay(order, matches)
    rows = await sql_players(first.rt.store)
    assert {
        pid: {k: row[k] for k in ("rating", "wins", "losses", "draws", "games")}
        for pid, row in rows.items()
    } == expected
    assert sum(round(row["rating"] * 100) for row in rows.values()) == 20 * 1200 * 100
    # the answers agree with SQL
    for reply in results:
        row = matches[reply.body["match_id"]]
        assert reply.body["rating_changes"] == {
            row["player_a"]: row["rating_change_a"],
            row["player_b"]: row["rating_change_b"],
        }
    # per player, completed_at never goes backwards along the commit order
    last_seen: dict[str, str] = {}
    for match_id in order:
        row = matches[match_id]
        for pid in (row["player_a"], row["player_b"]):
            assert row["completed_at"] >= last_seen.get(pid, ""), match_id
            last_seen[pid] = row["completed_at"]

    # the Redis board equals SQL, as both instances see it
    for api in (first, second):
        await eventually(lambda api=api: board_matches_sql(api.rt), 5, "the board to equal SQL")
    pages = [(await api.get("/api/leaderboard")).body["entries"] for api in (first, second)]
    assert pages[0] == pages[1]
    assert [e["player_id"] for e in pages[0]] == [
        pid for pid, _ in sorted(expected.items(), key=lambda kv: (-kv[1]["rating"], kv[0]))
    ]
    # and the log holds each result once
    names = [e["event"] for e in events]
    updates = [e["data"]["changes"] for e in events if e["event"] == "leaderboard:update"]
    newcomers = [
        c["player_id"] for changes in updates for c in changes if c["previous_rank"] is None
    ]
    assert names.count("match:result") == 200
    assert (
        len(updates)
        - sum(1 for changes in updates if all(c["previous_rank"] is None for c in changes))
        == 200
    )
    # and each player joined the board once, announced once
    assert sorted(newcomers) == sorted(expected)


@pytest.mark.parametrize(
    "db_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_the_same_result_posted_concurrently_is_counted_once(
    instances: tuple[Api, Api],
) -> None:
    first, second = instances
    await first.create("m1", "a", "b")
    replies = await asyncio.gather(
        *(api.post("/api/matches/m1/result", {"winner_id": "b"}) for api in [first, second] * 10)
    )
    assert {reply.status for reply in replies} == {200}
    assert all(reply.body == replies[0].body for reply in replies)
    assert replies[0].body["rating_changes"] == {"a": -16.0, "b": 16.0}
    rows = await sql_players(first.rt.store)
    assert [(rows[p]["rating"], rows[p]["games"]) for p in "ab"] == [(1184.0, 1), (1216.0, 1)]
    assert await published(first)
    events = await log_events(first.rt.engine)
    assert [e["event"] for e in events].count("match:result") == 1
    assert [e["event"] for e in events].count("player:stats_update") == 2
    # and sequentially, again, through either instance
    for api in (first, second):
        reply = await api.post("/api/matches/m1/result", {"winner_id": "b"})
        assert (reply.status, reply.body) == (200, replies[0].body)
    assert len(await log_events(first.rt.engine)) == len(events)
    await eventually(lambda: board_matches_sql(second.rt), 5, "the board to equal SQL")


@pytest.mark.parametrize(
    "db_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_conflicting_results_posted_concurrently_one_wins(
    instances: tuple[Api, Api],
) -> None:
    first, second = instances
    for number in range(10):
        await first.create(f"m{number}", "a", "b")
    for number in range(10):
        path = f"/api/matches/m{number}/result"
        a_wins, b_wins = await asyncio.gather(
            first.post(path, {"winner_id": "a"}), second.post(path, {"winner_id": "b"})
        )
        assert sorted([a_wins.status, b_wins.status]) == [200, 409]
        winner = "a" if a_wins.status == 200 else "b"
        assert (await second.get(f"/api/matches/m{number}")).body["winner_id"] == winner
    rows = await sql_players(first.rt.store)
    assert rows["a"]["games"] == rows["b"]["games"] == 10
    assert rows["a"]["wins"] + rows["b"]["wins"] == 10
    assert round(rows["a"]["rating"] + rows["b"]["rating"], 2) == 2400.0


@pytest.mark.parametrize(
    "db_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_the_same_match_created_concurrently_exists_once(
    instances: tuple[Api, Api],
) -> None:
    first, second = instances
    replies = await asyncio.gather(
        *(
            api.post("/api/matches", {"match_id": "m1", "player_ids": ["a", "b"]})
            for api in [first, second] * 5
        )
    )
    assert sorted(reply.status for reply in replies) == [200] * 9 + [201]
    assert all(reply.body == replies[0].body for reply in replies)
    assert await published(first)
    events = await log_events(first.rt.engine)
    assert [e["event"] for e in events] == ["match:created", "leaderboard:update"]
    assert set(await sql_matches(first.rt.store)) == {"m1"}


@pytest.mark.parametrize(
    "db_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_new_players_appearing_in_concurrent_creates(instances: tuple[Api, Api]) -> None:
    """Matches naming the same new players, in both orders, created at once: each player
    appears once, at 1200, and every create succeeds (no deadlock between the inserts)."""
    first, second = instances
    creates = []
    for n in range(20):
        x, y = f"x{n}", f"y{n}"
        creates += [
            first.post("/api/matches", {"match_id": f"m{n}a", "player_ids": [x, y]}),
            second.post("/api/matches", {"match_id": f"m{n}b", "player_ids": [y, x]}),
        ]
    replies = await asyncio.gather(*creates)
    assert [reply.status for reply in replies] == [201] * 40, [
        r.body for r in replies if r.status != 201
    ][:2]
    rows = await sql_players(first.rt.store)
    assert len(rows) == 40 and {row["rating"] for row in rows.values()} == {1200.0}
    await eventually(lambda: board_matches_sql(first.rt), 5, "the board to equal SQL")
