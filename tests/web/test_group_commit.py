"""Group commit of match results: concurrent results are applied by one writer, several to a
transaction, in commit order; each result sees the ratings the one before it left, exactly as
if they had been applied one by one, and a bad result in a group fails alone."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from quart import Quart

from ..helpers import Api, eventually, log_events, serving, sql_matches, sql_players
from ..test_concurrency import commit_order, published, replay


@pytest.fixture(name="grouped_api")
async def _grouped_api(
    make_app: Callable[..., Quart], engine_url: str | None, database_url: str
) -> AsyncIterator[Api]:
    async with serving(make_app(redis_url=engine_url, database_url=database_url)) as api:
        yield api


async def _create_all(api: Api, games: list[tuple[str, str, str]]) -> None:
    for match_id, a, b in games:
        await api.create(match_id, a, b)


@pytest.mark.parametrize(
    "db_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_concurrent_results_on_one_player_equal_the_serial_replay(grouped_api: Api) -> None:
    api = grouped_api
    rng = random.Random(8)
    # one player in every match: each result must see the rating the previous one left
    games = [(f"m{n:02d}", "hub", f"o{n:02d}") for n in range(32)]
    await _create_all(api, games)
    outcomes = [rng.choice(["hub", "other", None]) for _ in games]
    replies = await asyncio.gather(
        *(
            api.post(
                f"/api/matches/{m}/result",
                {"draw": True} if w is None else {"winner_id": a if w == "hub" else b},
            )
            for (m, a, b), w in zip(games, outcomes, strict=True)
        )
    )
    assert [reply.status for reply in replies] == [200] * len(games), [
        r.body for r in replies if r.status != 200
    ][:3]

    matches = await sql_matches(api.rt.store)
    assert await published(api)
    order = commit_order(await log_events(api.rt.engine))
    assert sorted(order) == [m for m, _, _ in games]
    # replay() also checks each stored rating change against the ratings before it
    expected = replay(order, matches)
    rows = await sql_players(api.rt.store)
    assert {
        pid: {k: row[k] for k in ("rating", "wins", "losses", "draws", "games")}
        for pid, row in rows.items()
    } == expected
    for reply in replies:
        row = matches[reply.body["match_id"]]
        assert reply.body["rating_changes"] == {
            row["player_a"]: row["rating_change_a"],
            row["player_b"]: row["rating_change_b"],
        }
    # and they went in fewer transactions than results
    writer = api.rt.matches.writer
    assert writer.results == len(games)
    assert writer.groups < len(games), (writer.groups, writer.results)


def _poison_sql(is_sqlite: bool) -> list[str]:
    """A trigger that makes the database refuse to complete the match `poison`."""
    if is_sqlite:
        return [
            "CREATE TRIGGER poison BEFORE UPDATE ON matches WHEN NEW.match_id = 'poison'"
            " BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        ]
    return [
        "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN"
        " IF NEW.match_id = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF;"
        " RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER poison BEFORE UPDATE ON matches FOR EACH ROW EXECUTE FUNCTION poison()",
    ]


@pytest.mark.parametrize(
    "db_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_a_bad_result_in_a_group_fails_alone(grouped_api: Api) -> None:
    api = grouped_api
    good = [(f"g{n:02d}", "hub", f"o{n:02d}") for n in range(12)]
    await _create_all(api, good)
    await api.create("cancelled", "hub", "x1")
    assert (await api.post("/api/matches/cancelled/cancel")).status == 200
    await api.create("twice", "hub", "x2")
    await api.create("poison", "hub", "x3")
    await api.create("stranger", "hub", "x4")
    for statement in _poison_sql(api.rt.store.is_sqlite):
        await api.rt.store.db.execute(statement)

    bad = {
        "cancelled": {"winner_id": "hub"},  # 409: a cancelled match
        "nowhere": {"winner_id": "hub"},  # 404: no such match
        "stranger": {"winner_id": "nobody"},  # 422: the winner does not play in it
        "poison": {"winner_id": "hub"},  # the database refuses this one write
    }
    requests = [(m, {"winner_id": a}) for m, a, _ in good] + list(bad.items())
    requests += [("twice", {"winner_id": "hub"}), ("twice", {"winner_id": "x2"})]
    random.Random(3).shuffle(requests)
    replies = dict(
        zip(
            range(len(requests)),
            await asyncio.gather(*(api.post(f"/api/matches/{m}/result", b) for m, b in requests)),
            strict=True,
        )
    )
    status = {m: [] for m, _ in requests}  # type: dict[str, list[int]]
    for index, (match_id, _) in enumerate(requests):
        status[match_id].append(replies[index].status)
    assert all(status[m] == [200] for m, _, _ in good), status
    assert status["cancelled"] == [409]
    assert status["nowhere"] == [404]
    assert status["stranger"] == [422]
    assert status["poison"][0] >= 500
    assert sorted(status["twice"]) == [200, 409]

    # SQL: every good result applied once, nothing of the bad ones
    matches = await sql_matches(api.rt.store)
    assert all(matches[m]["status"] == "completed" for m, _, _ in good)
    assert matches["poison"]["status"] == "scheduled"
    assert matches["cancelled"]["status"] == "cancelled"
    assert matches["stranger"]["status"] == "scheduled"
    rows = await sql_players(api.rt.store)
    assert rows["hub"]["games"] == len(good) + 1  # + twice
    assert rows["x3"]["games"] == rows["x4"]["games"] == rows["x1"]["games"] == 0
    assert await published(api)
    events = await log_events(api.rt.engine)
    resulted = [e["data"]["match_id"] for e in events if e["event"] == "match:result"]
    assert sorted(resulted) == sorted([m for m, _, _ in good] + ["twice"])
    expected: Any = replay(commit_order(events), matches)
    assert rows["hub"]["rating"] == expected["hub"]["rating"]
    await eventually(lambda: _outbox_empty(api), 5, "the outbox to drain")


async def _outbox_empty(api: Api) -> bool:
    from ..helpers import outbox_count

    return await outbox_count(api.rt.store) == 0
