"""The database failing at a precise point of a write (PROTOCOL 7: a dependency down is a 503
with Retry-After, never a 500; PROTOCOL 4: a 2xx means durable, so a failed write applies
nothing, or, when the COMMIT's answer was lost, exactly what a retry would have applied).

PostgreSQL sits behind the fault proxy, which resets the connection at one protocol point:
at BEGIN, in the middle of the statements, at COMMIT before the server saw it, and at COMMIT
after the server committed (the client cannot know: that answer must be a 503 too, and the
client's retry must not apply the result twice). The intermittent 500 of the fault suite's
`refuse` case came from this class: a reset that lands between two statements of a
transaction surfaces from asyncpg as `InterfaceError("connection is closed")`, not as a
network error."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from quart import Quart

from quart_app.store.database import PG_STATEMENT_TIMEOUT, DatabaseUnavailable, Store

from ..faults import FaultProxy
from ..helpers import (
    Api,
    assert_problem,
    eventually,
    log_events,
    outbox_count,
    serving,
    sql_matches,
    sql_players,
)


def _port_of(database_url: str) -> int:
    return int(database_url.rsplit(":", 1)[1].split("/", 1)[0])


@pytest.fixture(name="proxy")
def _proxy(database_url: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(_port_of(database_url)).start()
    yield proxy
    proxy.stop()


@pytest.fixture(name="proxied_url")
def _proxied_url(database_url: str, proxy: FaultProxy) -> str:
    port = _port_of(database_url)
    return database_url.replace(f":{port}/", f":{proxy.port}/")


@pytest.fixture(name="proxied_api")
async def _proxied_api(
    proxied_url: str, database_url: str, make_app: Callable[..., Quart]
) -> AsyncIterator[Api]:
    # The schema is migrated through a direct connection: the proxy serves the app alone.
    migrator = Store(database_url)
    await migrator.connect()
    await migrator.disconnect()
    async with serving(make_app(database_url=proxied_url)) as api:
        yield api


async def _closed(raw: Any) -> bool:
    """Whether the driver has seen its connection die (asyncpg detaches a pooled connection
    that died from its pool proxy, which then refuses even this question)."""
    try:
        return bool(raw.is_closed())
    except asyncpg.exceptions.InterfaceError:
        return True


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
async def test_a_connection_reset_between_two_statements_of_a_write_is_database_unavailable(
    proxied_url: str, database_url: str, proxy: FaultProxy
) -> None:
    migrator = Store(database_url)
    await migrator.connect()
    await migrator.disconnect()
    store = Store(proxied_url)
    await store.connect(migrate=False)
    try:
        with pytest.raises(DatabaseUnavailable):
            async with store.write() as conn:
                assert await conn.fetch_val("SELECT 1") == 1
                proxy.reset()
                # The RST has reached the driver: the next statement finds its socket gone.
                await eventually(lambda: _closed(conn.raw_connection), 10, "the reset seen")
                await conn.execute("SELECT 2")
        # and the pool recovers: the next write gets a fresh connection
        async with store.write() as conn:
            assert await conn.fetch_val("SELECT 3") == 3
    finally:
        await store.disconnect()


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
async def test_a_blackholed_write_is_unavailable_within_the_statement_bound_and_its_task_recovers(
    proxied_url: str, database_url: str, proxy: FaultProxy
) -> None:
    """One long-lived task (as the relay and the result writer are): its write in a silent
    network answers DatabaseUnavailable after the statement bound, not after the rollback,
    the pool's reset and a cancellation through the same dead network; and its next write,
    once the network is back, works (it used to fail for ever: "already acquired")."""
    migrator = Store(database_url)
    await migrator.connect()
    await migrator.disconnect()
    store = Store(proxied_url)
    await store.connect(migrate=False)
    try:
        async with store.write() as conn:
            await conn.fetch_val("SELECT 1")  # a pooled, open connection
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            async with store.write() as conn:
                await conn.fetch_val("SELECT 2")
        took = time.monotonic() - started
        assert took < PG_STATEMENT_TIMEOUT + 2.5, f"answered after {took:.1f}s"
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):  # a new connection is bounded too
            await store.db.fetch_val("SELECT 3")
        took = time.monotonic() - started
        assert took < PG_STATEMENT_TIMEOUT + 2.5, f"answered after {took:.1f}s"
        proxy.pass_through()

        async def writes() -> bool:
            async with store.write() as conn:
                return bool(await conn.fetch_val("SELECT 4") == 4)

        await eventually(writes, 15, "a write in the same task once the network is back")
        assert await store.db.fetch_val("SELECT 5") == 5
    finally:
        await store.disconnect()


# (pattern sent by the client, whether the server acts on it before the reset, applied?)
CUT_POINTS = [
    pytest.param(b"BEGIN", False, False, id="at-begin"),
    pytest.param(b"UPDATE players SET rating", False, False, id="mid-statements"),
    pytest.param(b"UPDATE players SET rating", True, False, id="mid-statements-answer-lost"),
    pytest.param(b"COMMIT", False, False, id="at-commit-not-committed"),
    pytest.param(b"COMMIT", True, True, id="at-commit-committed-answer-lost"),
]


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
@pytest.mark.parametrize(("pattern", "after_reply", "applied"), CUT_POINTS)
async def test_a_result_whose_connection_is_reset_answers_503_and_its_retry_applies_it_once(
    proxied_api: Api, proxy: FaultProxy, pattern: bytes, after_reply: bool, applied: bool
) -> None:
    api = proxied_api
    await api.create("m1", "ann", "bob")
    proxy.cut_on(pattern, after_reply=after_reply)

    reply = await api.post("/api/matches/m1/result", {"winner_id": "ann"})

    assert proxy.cuts == 1, "the cut never went off: the pattern was not sent"
    assert_problem(reply, 503)
    assert reply.headers["Retry-After"]
    stored = (await sql_matches(api.rt.store))["m1"]
    assert stored["status"] == ("completed" if applied else "scheduled")
    games = {pid: row["games"] for pid, row in (await sql_players(api.rt.store)).items()}
    assert games == ({"ann": 1, "bob": 1} if applied else {"ann": 0, "bob": 0})

    # The client retries the same request: one result, applied once, whatever the cut did.
    retry = await api.post("/api/matches/m1/result", {"winner_id": "ann"})
    assert retry.status == 200, retry
    players = await sql_players(api.rt.store)
    assert {pid: row["games"] for pid, row in players.items()} == {"ann": 1, "bob": 1}
    changes = retry.body["rating_changes"]
    assert changes["ann"] > 0 and changes["ann"] == -changes["bob"]
    assert players["ann"]["rating"] == pytest.approx(1200 + changes["ann"])
    assert players["bob"]["rating"] == pytest.approx(1200 + changes["bob"])

    async def published_once() -> bool:
        results = [e for e in await log_events(api.rt.engine) if e["event"] == "match:result"]
        # Once the outbox is empty nothing more can be published: the count is final.
        return await outbox_count(api.rt.store) == 0 and len(results) == 1

    await eventually(published_once, 15, "one match:result in the log, outbox empty")


@pytest.mark.postgres
@pytest.mark.parametrize("db_kind", ["postgres"])
async def test_a_create_whose_commit_answer_is_lost_answers_503_and_its_retry_answers_200(
    proxied_api: Api, proxy: FaultProxy
) -> None:
    api = proxied_api
    proxy.cut_on(b"COMMIT", after_reply=True)
    body = {"match_id": "m1", "player_ids": ["ann", "bob"]}

    reply = await api.post("/api/matches", body)

    assert proxy.cuts == 1
    assert_problem(reply, 503)
    retry = await api.post("/api/matches", body)
    assert retry.status == 200, retry  # the stored match: it was created once
    assert list(await sql_matches(api.rt.store)) == ["m1"]


async def test_sqlite_locked_for_longer_than_the_busy_timeout_is_database_unavailable(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/locked.db"
    store = Store(url, sqlite_busy_timeout=0.2)
    await store.connect()
    other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another instance holding the write lock
        with pytest.raises(DatabaseUnavailable):
            async with store.write() as conn:
                await conn.execute("DELETE FROM outbox")
        other.execute("ROLLBACK")
        async with store.write() as conn:  # and the store is usable again
            await conn.execute("DELETE FROM outbox")
    finally:
        other.close()
        await store.disconnect()
