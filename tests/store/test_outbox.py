"""The outbox: a change committed while Redis is down is still answered 2xx, and its events reach
the log exactly once when Redis returns, without restarting the instance."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families
from quart import Quart

from quart_app.domain import elo
from quart_app.engine.base import Draft, Publication
from quart_app.store.outbox import add, new_key
from quart_app.store.tables import outbox as outbox_table

from ..helpers import (
    Api,
    board_matches_sql,
    eventually,
    log_events,
    outbox_count,
    serving,
    sql_matches,
    sql_players,
)
from ..services import RedisServer


async def test_changes_committed_while_redis_is_down_are_published_once_it_returns(
    make_app: Callable[..., Quart], own_redis: RedisServer
) -> None:
    async with serving(make_app(redis_url=own_redis.url)) as api:  # default intervals
        rt = api.rt
        await api.create("m1", "a", "b")
        assert await board_matches_sql(rt)

        own_redis.stop()
        # Every write still commits and answers 2xx: SQL is the truth, the outbox keeps events.
        reply = await api.post("/api/matches/m1/result", {"winner_id": "a"})
        assert reply.status == 200, reply
        assert reply.body["rating_changes"] == {"a": 16.0, "b": -16.0}
        reply = await api.post("/api/matches", {"match_id": "m2", "player_ids": ["c", "a"]})
        assert reply.status == 201, reply
        assert (await api.post("/api/matches/m2/start")).status == 200
        reply = await api.post("/api/matches/m2/result", {"draw": True})
        assert reply.status == 200, reply
        players = await sql_players(rt.store)
        c_rating, a_rating, _ = elo.apply_result(1200.0, 1216.0, 0.5, 32)
        assert (players["a"]["rating"], players["b"]["rating"]) == (a_rating, 1184.0)
        assert (players["c"]["rating"], players["c"]["games"]) == (c_rating, 1)
        assert (await sql_matches(rt.store))["m2"]["status"] == "completed"
        assert await outbox_count(rt.store) >= 4  # (plus rows published but not yet deleted)
        # the same result again is still answered from SQL
        assert (await api.post("/api/matches/m1/result", {"winner_id": "a"})).status == 200

        own_redis.start()  # the same port, but empty: Redis lost everything

        async def caught_up() -> bool:
            return await board_matches_sql(rt) and await outbox_count(rt.store) == 0

        # (PROTOCOL: within 1 s of its return; measured here 0.8-0.9 s with the default
        # intervals; the timeout is generous so that a slow CI machine does not flake)
        await eventually(caught_up, 15, "the board and the outbox to catch up with SQL")
        board = (await api.get("/api/leaderboard")).body["entries"]
        assert {e["player_id"]: e["rating"] for e in board} == {
            pid: row["rating"] for pid, row in players.items()
        }

        # The log (a new one: Redis lost the old) holds each event of the outage exactly once,
        # in the order SQL committed them.
        async def logged() -> bool:
            return len(await log_events(rt.engine)) >= 15

        await eventually(logged, 5, "the outage's events in the log")
        events = await log_events(rt.engine)
        # no event twice (two events with the same name and data would be one delivered twice)
        counts = Counter((e["event"], json.dumps(e["data"], sort_keys=True)) for e in events)
        assert [key for key, n in counts.items() if n != 1] == []
        # and none missing, in the order SQL committed them
        per_match = [(e["event"], e["data"]["match_id"]) for e in events if "match_id" in e["data"]]
        assert per_match == [
            ("match:result", "m1"),
            ("leaderboard:update", "m1"),
            ("match:created", "m2"),
            ("leaderboard:update", "m2"),  # c joins the board
            ("match:started", "m2"),
            ("match:result", "m2"),
            ("leaderboard:update", "m2"),
        ]
        personal = sorted(
            (e["event"], e["data"]["player_id"], e["data"]["rating"])
            for e in events
            if e["event"] in ("leaderboard:player_rank", "player:stats_update")
        )
        assert personal == sorted(
            (name, pid, rating)
            for name in ("leaderboard:player_rank", "player:stats_update")
            for pid, rating in (("a", 1216.0), ("b", 1184.0), ("a", a_rating), ("c", c_rating))
        )
        assert len(events) == 15

        # and the instance goes on working normally
        await api.play("m3", "b", "c", "b")
        assert await board_matches_sql(rt)


async def test_a_relay_pass_publishes_rows_left_by_a_crashed_request(
    make_app: Callable[..., Quart], engine_url: str | None
) -> None:
    """A row whose request died between commit and publish is published by the relay loop."""
    async with serving(make_app(redis_url=engine_url, outbox_interval=0.1)) as api:
        rt = api.rt
        original, original_many = rt.relay.publish, rt.relay.publish_many

        async def crashed(publication: object) -> bool:
            return False  # as if the process died right after the commit

        async def crashed_many(publications: list[object]) -> list[bool]:
            return [False] * len(publications)  # (the result writer publishes its groups)

        rt.relay.publish = crashed  # type: ignore[method-assign]
        rt.relay.publish_many = crashed_many  # type: ignore[method-assign]
        await api.create("m1", "a", "b")
        assert (await api.post("/api/matches/m1/result", {"winner_id": "b"})).status == 200
        assert await outbox_count(rt.store) == 2
        rt.relay.publish = original  # type: ignore[method-assign]
        rt.relay.publish_many = original_many  # type: ignore[method-assign]

        async def published() -> bool:
            return await outbox_count(rt.store) == 0 and await board_matches_sql(rt)

        await eventually(published, 10, "the relay to publish the rows")
        names = [event["event"] for event in await log_events(rt.engine)]
        assert names.count("match:created") == 1 and names.count("match:result") == 1
        assert (await api.get("/api/players/b")).body["rating"] == 1216.0


async def _metric(api: Api, name: str) -> float:
    """One sample of the instance's /metrics, parsed with Prometheus' own parser."""
    text = (await api.get("/metrics", token=None)).body
    text = text.decode() if isinstance(text, bytes) else text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} is not in /metrics")


async def test_a_redis_error_after_the_commit_is_still_a_2xx_and_the_row_goes_out_later(
    make_app: Callable[..., Quart], own_redis: RedisServer
) -> None:
    """Redis answers, but refuses writes (OOM under noeviction): the result is committed, so
    the client hears 200; the row is counted as failed, and is published once Redis accepts
    writes again."""
    async with serving(make_app(redis_url=own_redis.url, outbox_interval=0.1)) as api:
        rt = api.rt
        rt.relay.retry_cap = 0.5  # keep the test short; the default backs off further
        await api.create("m1", "a", "b")
        own_redis.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
        own_redis.cli("CONFIG", "SET", "maxmemory", "1")
        try:
            reply = await api.post("/api/matches/m1/result", {"winner_id": "a"})
            assert reply.status == 200, reply
            assert reply.body["rating_changes"] == {"a": 16.0, "b": -16.0}
            assert (await sql_matches(rt.store))["m1"]["status"] == "completed"
            assert await outbox_count(rt.store) >= 1

            async def counted() -> bool:
                return await _metric(api, "rankpulse_outbox_publish_failures_total") >= 2

            # the request's own attempt, then at least one retry of the relay
            await eventually(counted, 10, "failed publishes counted in /metrics")
        finally:
            own_redis.cli("CONFIG", "SET", "maxmemory", "0")

        async def published() -> bool:
            return await outbox_count(rt.store) == 0 and await board_matches_sql(rt)

        await eventually(published, 15, "the row to be published once Redis takes writes")
        names = [event["event"] for event in await log_events(rt.engine)]
        assert names.count("match:result") == 1


async def test_a_row_that_can_never_be_published_does_not_block_the_others(
    make_app: Callable[..., Quart], redis_url: str
) -> None:
    async with serving(make_app(redis_url=redis_url, outbox_interval=0.1)) as api:
        rt = api.rt
        # Rows the engine refuses every time, committed before the others (as if an older
        # release had written them): one with an event name the engine cannot encode...
        poison = Publication(key=new_key(), events=(Draft(("matches",), "not a name!", {}),))
        # ...and one whose payload cannot even be read. Then a good row, left to the relay
        # loop as a crashed request would leave it.
        later = Publication(key=new_key(), events=(Draft(("matches",), "announcement", {}),))
        async with rt.store.write() as conn:
            await conn.execute(
                outbox_table.insert().values(key=new_key(), payload="{", created_at=0.0)
            )
            await add(conn, poison)
            await add(conn, later)

        async def later_published() -> bool:
            names = [event["event"] for event in await log_events(rt.engine)]
            return names.count("announcement") == 1 and await outbox_count(rt.store) == 2

        await eventually(later_published, 10, "the later row to be published by the relay")
        # and changes made now go out as usual
        await api.create("m1", "a", "b")
        assert (await api.post("/api/matches/m1/result", {"winner_id": "b"})).status == 200
        assert "match:result" in [event["event"] for event in await log_events(rt.engine)]
        assert await _metric(api, "rankpulse_outbox_publish_failures_total") >= 2
        assert await _metric(api, "rankpulse_outbox_refused_rows") == 2

        async def only_the_refused_rows_left() -> bool:  # (published rows go in batches)
            return await _metric(api, "rankpulse_outbox_pending") == 2

        await eventually(only_the_refused_rows_left, 10, "published rows to leave the outbox")


async def test_rows_of_a_match_wait_behind_its_refused_row_while_other_matches_go_on(
    make_app: Callable[..., Quart], redis_url: str
) -> None:
    """Ordering: a refused row holds back the later rows of its own match (their events must
    not overtake it), and only those."""
    async with serving(make_app(redis_url=redis_url, outbox_interval=0.1)) as api:
        rt = api.rt
        m1, m2 = ("matches", "match:m1"), ("matches", "match:m2")
        stuck = Publication(key=new_key(), events=(Draft(m1, "not a name!", {}),))
        m1_later = Publication(key=new_key(), events=(Draft(m1, "announcement", {"n": 1}),))
        m2_later = Publication(key=new_key(), events=(Draft(m2, "announcement", {"n": 2}),))
        async with rt.store.write() as conn:
            for publication in (stuck, m1_later, m2_later):
                await add(conn, publication)

        async def announced() -> list[int]:
            return [e["data"]["n"] for e in await log_events(rt.engine) if "n" in e["data"]]

        async def m2_published() -> bool:
            return await announced() != []

        await eventually(m2_published, 10, "the other match's row to be published")
        # m1's later row was before m2's in the outbox, yet it waits behind the stuck row...
        assert await announced() == [2]
        # ...and so does a new change of m1 made through the API meanwhile
        await api.create("m1", "a", "b")
        assert "match:created" not in [e["event"] for e in await log_events(rt.engine)]

        # Once the stuck row is gone (an operator deleted it), m1's rows go out, in order.
        async with rt.store.write() as conn:
            await conn.execute(outbox_table.delete().where(outbox_table.c.key == stuck.key))

        async def m1_published() -> bool:
            names = [e["event"] for e in await log_events(rt.engine)]
            return "match:created" in names

        await eventually(m1_published, 10, "m1's rows to be published after the stuck one")
        assert await announced() == [2, 1]
        events = await log_events(rt.engine)
        order = [e["data"].get("n", e["event"]) for e in events]
        assert order.index(1) < order.index("match:created"), order
