"""What only the Redis engine does: several instances as one, lost pub/sub messages, lost data,
crashed instances, Redis going away and coming back. Real redis-server processes throughout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from quart_app.engine.base import (
    BoardEntry,
    EngineUnavailable,
    Event,
    LogGap,
    NoSuchInstance,
    Publication,
    build_event,
)
from quart_app.engine.board_state import BoardIncomplete
from quart_app.engine.redis import RedisEngine
from tests.services import RedisServer

from .conftest import Collector, draft, rows

MakeRedis = Callable[..., Awaitable[RedisEngine]]


@pytest.fixture(name="admin")
async def _admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client, to do to Redis what operators and failures do."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(name="own_redis")
def _own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test only, to stop and start."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def seqs(events: list[Event]) -> list[int]:
    return [event.seq for event in events]


async def crash(engine: RedisEngine) -> None:
    """What kill -9 leaves behind: the tasks are gone, the connections closed, and nothing was
    cleaned up in Redis (its presence stays registered until its deadline passes)."""
    engine._stopping = True
    for task in engine._tasks:
        task.cancel()
    await asyncio.wait(engine._tasks, timeout=5)
    engine._tasks = []
    await engine._sub.aclose()
    await engine._redis.aclose()

    async def already_dead() -> None:
        return None

    engine.stop = already_dead  # type: ignore[method-assign]


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def presence_of(events: list[Event]) -> list[tuple[str, str]]:
    return [
        (e.name, json.loads(e.text)["data"]["player_id"])
        for e in events
        if e.name.startswith("player:")
    ]


# several instances ----------------------------------------------------------------------------
async def test_events_of_one_instance_reach_the_others_once_in_order(
    make_redis: MakeRedis,
) -> None:
    a, b, c = await make_redis(), await make_redis(), await make_redis()
    on_a, on_b, on_c = Collector(a), Collector(b), Collector(c)
    published: list[Event] = []
    for i in range(20):
        source = (a, b, c)[i % 3]
        published += await source.publish(
            Publication(events=tuple(draft(i * 10 + j) for j in range(i % 4 + 1)))
        )
    # and concurrently, from all three
    results = await asyncio.gather(
        *((a, b, c)[i % 3].publish(Publication(events=(draft(1000 + i),))) for i in range(30))
    )
    published += [e for events in results for e in events]
    published.sort(key=lambda e: e.seq)
    assert seqs(published) == list(range(1, len(published) + 1))
    assert a.epoch == b.epoch == c.epoch

    marker = await on_b.flush(a)
    for collector in (on_a, on_b, on_c):
        await collector.wait_count(marker.seq)
        assert seqs(collector.events) == list(range(1, marker.seq + 1))
        assert [e.text for e in collector.events[:-1]] == [e.text for e in published]
    # every instance reads the same log
    assert [e.text for e in await c.read_after(0, 1000)] == [e.text for e in on_a.events]


async def test_texts_are_byte_identical_to_build_event_on_every_path(
    make_redis: MakeRedis,
) -> None:
    a, b = await make_redis(), await make_redis()
    on_b = Collector(b)
    drafts = (
        draft(1, rooms=("matches", "match:x"), text='ü "q" \\ \u2028'),
        draft(2, rooms=("player:é",)),
    )
    publication = Publication(key="k", events=drafts, ts=1234567890123)
    events = await a.publish(publication)
    expected = [
        build_event(a.epoch, e.seq, d, publication.ts).text
        for e, d in zip(events, drafts, strict=True)
    ]
    assert [e.text for e in events] == expected  # built in Python
    assert [e.text for e in await b.read_after(0, 10)] == expected  # built in Lua
    await on_b.wait_count(2)
    assert [e.text for e in on_b.events] == expected  # carried by the bus
    assert [(e.cursor, e.rooms, e.name) for e in on_b.events] == [
        (e.cursor, e.rooms, e.name) for e in events
    ]


async def test_killed_subscriptions_lose_no_event(
    make_redis: MakeRedis, admin: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    a = await make_redis()
    b = await make_redis()
    on_b = Collector(b)
    total = 600
    for i in range(total):
        await a.publish(Publication(events=(draft(i),)))
        if i % 150 == 75:
            assert b._subscribed is not None
            await asyncio.wait_for(b._subscribed.wait(), 5)
            assert await admin.client_kill_filter(_type="pubsub") >= 1
    await on_b.wait_count(total, timeout=10)
    marker = await on_b.flush(a)
    assert seqs(on_b.events) == list(range(1, marker.seq + 1))
    assert [json.loads(e.text)["data"]["n"] for e in on_b.events[:-1]] == list(range(total))
    assert sum("subscription lost" in r.getMessage() for r in caplog.records) >= 4


async def test_a_quiet_gap_is_found_by_the_timer(
    make_redis: MakeRedis, admin: aioredis.Redis
) -> None:
    """An event whose bus message never arrives, and nothing after it: the periodic catch-up
    delivers it (within backfill_interval)."""
    b = await make_redis(backfill_interval=0.2)
    a = await make_redis(prefix="lrp:")
    on_b = Collector(b)
    await a.publish(Publication(events=(draft(1),)))
    await on_b.wait_count(1)
    # append to the log behind the bus' back, as a lost message would leave it
    a._log.bus_channel = "lrp:nobody-listens"
    [event] = await a.publish(Publication(events=(draft(2),)))
    await on_b.wait_count(2, timeout=3)
    assert on_b.events[1].text == event.text


class FreezingProxy:
    """A TCP proxy to Redis whose current connections can be frozen: they stay open and
    silent, as a half-open socket does (no RST, no FIN, nothing)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections = 0
        self._frozen: list[asyncio.Event] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    def freeze(self) -> None:
        for frozen in self._frozen:
            frozen.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [writer, up_writer]
        frozen = asyncio.Event()
        self._frozen.append(frozen)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if frozen.is_set():
                        continue  # swallowed: the peer hears nothing
                    dst.write(data)
                    await dst.drain()

        for task in (
            asyncio.create_task(pump(reader, up_writer)),
            asyncio.create_task(pump(up_reader, writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


async def test_a_silently_dead_subscription_is_replaced(
    make_redis: MakeRedis,
    redis_url: str,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = FreezingProxy(redis_server.port)
    proxied = await proxy.start()
    a = await make_redis()
    b = RedisEngine(redis_url, backfill_interval=0.2)
    await b._sub.aclose()
    b._sub = aioredis.Redis.from_url(proxied, decode_responses=True, socket_timeout=None)
    await b.start()
    try:
        on_b = Collector(b)
        await a.publish(Publication(events=(draft(1),)))
        await on_b.wait_count(1)
        assert proxy.connections == 1
        proxy.freeze()
        # events still arrive (from the log, on the timer) ...
        await a.publish(Publication(events=(draft(2),)))
        await on_b.wait_count(2, timeout=2)
        # ... and the dead subscription is found by the probe and replaced
        await wait_until(lambda: _true(proxy.connections == 2), 10, "a new subscription")
        assert any("probe not echoed" in r.getMessage() for r in caplog.records)
        assert b._subscribed is not None
        await asyncio.wait_for(b._subscribed.wait(), 5)
        await a.publish(Publication(events=(draft(3),)))
        await on_b.wait_count(3)
        assert seqs(on_b.events) == [1, 2, 3]
    finally:
        await b.stop()
        await proxy.stop()


# Busy for less than a bus read, about one, and longer: the subscriber's read then ends early,
# on its timer at once, or late by more than the timer's own slack.
@pytest.mark.parametrize("busy", [0.5, 1.0, 1.6])
async def test_an_echo_waiting_unread_behind_a_busy_loop_is_not_taken_for_a_lost_one(
    make_redis: MakeRedis, caplog: pytest.LogCaptureFixture, busy: float
) -> None:
    """A storm can keep the event loop busy for seconds, and the probe's echo then waits in
    the socket for its turn. That is a late reader, not a lost subscription: resubscribing
    (and catching up from the log) would only add work at the worst moment."""
    b = await make_redis(backfill_interval=60)  # no probe of its own during the test
    feed = b._feed
    assert b._subscribed is not None
    await asyncio.wait_for(b._subscribed.wait(), 5)
    feed._probe_timeout = 0.3
    feed._last_bus_rx = 0.0  # quiet for long: the next check sends a probe
    await feed._probe()
    assert feed._probe_token is not None
    time.sleep(busy)  # the loop busy past the echo's deadline; the echo is in the socket
    await feed._probe()  # the periodic check, before the subscriber had its turn
    await wait_until(lambda: _true(feed.probes_echoed == 1), 5, "the echo read")
    assert not feed._reconnect_bus
    assert feed.probe_resubscribes == 0
    assert not [r for r in caplog.records if "probe not echoed" in r.getMessage()]


async def test_a_dead_subscription_is_found_while_the_loop_stays_busy(
    redis_url: str, redis_server: RedisServer
) -> None:
    """The other side: a loop late at every turn (a long storm) ends every read late, and a
    dead subscription must still be replaced (events would otherwise come only from the log,
    up to a backfill interval late)."""
    proxy = FreezingProxy(redis_server.port)
    proxied = await proxy.start()
    b = RedisEngine(redis_url, backfill_interval=0.2)  # probe after 1 s quiet, 1 s to answer
    await b._sub.aclose()
    b._sub = aioredis.Redis.from_url(proxied, decode_responses=True, socket_timeout=None)
    await b.start()
    stop_hogging = asyncio.Event()

    async def hog() -> None:  # every turn of the loop takes 0.25 s
        while not stop_hogging.is_set():
            time.sleep(0.25)
            await asyncio.sleep(0)

    hogging: asyncio.Task[None] | None = None
    try:
        assert b._subscribed is not None
        await asyncio.wait_for(b._subscribed.wait(), 5)
        assert proxy.connections == 1
        proxy.freeze()  # the subscription is dead from here on
        hogging = asyncio.create_task(hog())
        await wait_until(lambda: _true(proxy.connections >= 2), 20, "a new subscription")
        assert b._feed.probe_resubscribes >= 1
    finally:
        stop_hogging.set()
        if hogging is not None:
            await hogging
        await b.stop()
        await proxy.stop()


async def _true(value: bool) -> bool:
    return value


async def test_epoch_changes_when_redis_loses_its_data(
    make_redis: MakeRedis, admin: aioredis.Redis
) -> None:
    a, b = await make_redis(backfill_interval=0.2), await make_redis(backfill_interval=0.2)
    on_b = Collector(b)
    for i in range(5):
        await a.publish(Publication(events=(draft(i),)))
    await on_b.wait_count(5)
    old_epoch = a.epoch
    assert b.epoch == old_epoch

    await admin.flushall()
    [event] = await a.publish(Publication(events=(draft(100),)))
    assert event.seq == 1
    assert a.epoch != old_epoch and event.cursor == f"{a.epoch}.1"
    # B notices, and delivers the new epoch from its first event
    await on_b.wait_count(6)
    assert on_b.events[5].text == event.text
    await on_b.flush(a)
    assert b.epoch == a.epoch
    assert seqs(on_b.events) == [1, 2, 3, 4, 5, 1, 2]
    # an old position: unknown (past the new head), never events of another history
    with pytest.raises(LogGap, match="unknown"):
        await b.read_after(5, 10)


async def test_losing_the_seq_alone_is_data_loss_too(
    make_redis: MakeRedis, admin: aioredis.Redis
) -> None:
    a = await make_redis()
    for i in range(3):
        await a.publish(Publication(events=(draft(i),)))
    old_epoch = a.epoch
    await admin.delete("lrp:meta")  # epoch and seq are one hash: gone together
    assert await a.head() == 0
    assert a.epoch != old_epoch
    assert await a.read_after(0, 10) == []  # the old log went with them
    [event] = await a.publish(Publication(events=(draft(9),)))
    assert event.seq == 1


async def test_read_after_refuses_a_position_of_an_epoch_it_no_longer_has(
    make_redis: MakeRedis, admin: aioredis.Redis, redis_url: str
) -> None:
    """A caller checks its cursor's epoch against engine.epoch, then reads: when Redis lost
    its data in between (and new events already reached the old seq), that is "unknown"."""
    a = await make_redis()
    b = RedisEngine(redis_url)  # not started: no listener to notice the new epoch first
    try:
        for i in range(3):
            await a.publish(Publication(events=(draft(i),)))
        assert await b.head() == 3
        await admin.flushall()
        for i in range(5):
            await a.publish(Publication(events=(draft(i),)))
        with pytest.raises(LogGap, match="unknown"):
            await b.read_after(2, 10)
        assert b.epoch == a.epoch  # and the next check against the epoch will know
        assert len(await b.read_after(2, 10)) == 3
    finally:
        await b.stop()


async def test_board_rows_published_during_a_replace_are_kept(make_redis: MakeRedis) -> None:
    a, b = await make_redis(), await make_redis()
    entries = [BoardEntry(f"p{i:04d}", f"P{i}", 1000.0 + i, 0, 0, 0, 0, 1) for i in range(1200)]
    begun, go_on = asyncio.Event(), asyncio.Event()
    run = b._scripts.run

    async def paused_run(name: str, keys: list[str], args: list[Any]) -> Any:
        result = await run(name, keys, args)
        if name == "board_begin":
            begun.set()
            await go_on.wait()
        return result

    b._scripts.run = paused_run  # type: ignore[method-assign]
    replace = asyncio.create_task(b.board_replace(rows(*entries)))
    await begun.wait()
    # a match result lands while the new board is being built: newer row, and a new player
    await a.publish(
        Publication(
            board=(
                BoardEntry("p0005", "P5", 3000.0, 1, 0, 0, 1, 2),
                BoardEntry("newbie", "N", 1.0, 0, 1, 0, 1, 1),
            )
        )
    )
    go_on.set()
    await replace
    page, total = await a.board_page(0, 2)
    assert total == 1201
    assert page[0] == (1, BoardEntry("p0005", "P5", 3000.0, 1, 0, 0, 1, 2))
    assert (await a.board_player("newbie")) == (1201, BoardEntry("newbie", "N", 1.0, 0, 1, 0, 1, 1))


async def test_calls_reach_the_instance_named(make_redis: MakeRedis) -> None:
    a, b = await make_redis(), await make_redis()
    assert a.instance_id != b.instance_id and "-" not in a.instance_id

    async def b_answers(request: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "by": b.instance_id, "echo": request}

    b.on_call(b_answers)
    answer = await a.call(b.instance_id, {"action": "subscribe", "rooms": ["x"]}, 2.0)
    assert answer == {
        "status": 200,
        "by": b.instance_id,
        "echo": {"action": "subscribe", "rooms": ["x"]},
    }
    assert (await b.call(b.instance_id, {"n": 1}, 2.0))["by"] == b.instance_id  # local
    with pytest.raises(NoSuchInstance):
        await a.call("deadbeef", {}, 2.0)

    async def slow(request: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    b.on_call(slow)
    with pytest.raises(TimeoutError):
        await a.call(b.instance_id, {}, 0.3)


# presence across instances --------------------------------------------------------------------
async def test_presence_is_cluster_wide(make_redis: MakeRedis) -> None:
    a, b = await make_redis(), await make_redis()
    on_a = Collector(a)
    await a.presence_enter("alice")
    await b.presence_enter("alice")  # a second tab, on another instance
    await b.presence_enter("bob")
    assert await a.online_count() == 2 and await b.is_online("bob")
    await a.presence_leave("alice")
    await on_a.flush(a)
    assert presence_of(on_a.events) == [("player:online", "alice"), ("player:online", "bob")]
    await b.presence_leave("alice")
    await on_a.flush(b)
    assert presence_of(on_a.events)[2:] == [("player:offline", "alice")]
    assert await a.online_count() == 1


async def test_a_stopped_instance_takes_its_players_offline(make_redis: MakeRedis) -> None:
    a, b = await make_redis(), await make_redis()
    on_b = Collector(b)
    await a.presence_enter("only-on-a")
    await a.presence_enter("on-both")
    await b.presence_enter("on-both")
    await a.stop()
    await on_b.flush(b)
    assert presence_of(on_b.events) == [
        ("player:online", "only-on-a"),
        ("player:online", "on-both"),
        ("player:offline", "only-on-a"),
    ]
    assert await b.online_count() == 1


async def test_a_crashed_instance_takes_its_players_offline_once(
    make_redis: MakeRedis,
) -> None:
    ttl = 3.0
    a = await make_redis(presence_ttl_seconds=ttl)
    b = await make_redis(presence_ttl_seconds=ttl)
    c = await make_redis(presence_ttl_seconds=ttl)  # two survivors sweep concurrently
    on_b = Collector(b)
    await a.presence_enter("only-on-a")
    await a.presence_enter("only-on-a")
    await a.presence_enter("on-both")
    await b.presence_enter("on-both")
    await on_b.flush(b)
    start = await b.head()

    await crash(a)
    crashed_at = time.monotonic()
    await on_b.wait_for(
        lambda ev: ("player:offline", "only-on-a") in presence_of(ev),
        timeout=ttl + 1,
        what="the offline event",
    )
    assert time.monotonic() - crashed_at < ttl
    # more sweeps, by both survivors, find nothing more to do
    for _ in range(3):
        await asyncio.gather(b._presence.sweep(), c._presence.sweep())
    await on_b.flush(c)
    logged = await b.read_after(start, 100)
    assert presence_of(logged) == [("player:offline", "only-on-a")]
    assert not await c.is_online("only-on-a") and await c.is_online("on-both")
    assert await c.online_count() == 1


async def test_a_redis_stall_longer_than_the_deadline_takes_nobody_offline(
    make_redis: MakeRedis, admin: aioredis.Redis
) -> None:
    """Redis stalls (CLIENT PAUSE: commands wait, time goes on), so every instance misses its
    heartbeat deadline at once; the first sweep after it must not drop the others."""
    ttl = 2.0
    a = await make_redis(presence_ttl_seconds=ttl)
    b = await make_redis(presence_ttl_seconds=ttl)
    on_b = Collector(b)
    await a.presence_enter("xavier")
    await b.presence_enter("yvonne")
    await asyncio.sleep(ttl)  # both instances settled (a deadline of normal service)
    await on_b.flush(b)
    start = await b.head()
    await admin.client_pause(int(ttl * 1000), all=True)  # longer than the 0.7 x ttl deadline
    await asyncio.sleep(ttl * 1.5)  # the pause, then sweeps by both: nothing should happen
    await on_b.flush(a)
    assert presence_of(await b.read_after(start, 100)) == []
    assert await b.online_count() == 2


async def test_a_stalled_instance_comes_back_online(make_redis: MakeRedis) -> None:
    """An instance declared dead (it missed its heartbeats) re-registers with its players."""
    a = await make_redis(presence_ttl_seconds=3.0)
    b = await make_redis(presence_ttl_seconds=3.0)
    on_b = Collector(b)
    await a.presence_enter("zoe")
    await b._presence.drop_instance(a.instance_id, force=True)  # as a sweep would
    await on_b.wait_for(
        lambda ev: (
            presence_of(ev)
            == [("player:online", "zoe"), ("player:offline", "zoe"), ("player:online", "zoe")]
        ),
        timeout=3,
        what="zoe back online",
    )
    await a.presence_leave("zoe")
    await on_b.wait_for(lambda ev: presence_of(ev)[-1] == ("player:offline", "zoe"), 3)
    assert await b.online_count() == 0


# Redis down and back --------------------------------------------------------------------------
async def test_redis_down_then_back(own_redis: RedisServer) -> None:
    url = own_redis.url
    a = RedisEngine(url, presence_ttl_seconds=3.0, backfill_interval=0.2)
    b = RedisEngine(url, presence_ttl_seconds=3.0, backfill_interval=0.2)
    await a.start()
    await b.start()
    try:
        on_b = Collector(b)
        await a.presence_enter("pat")
        [before] = await a.publish(Publication(events=(draft(1),)))
        await on_b.wait_count(2)
        old_epoch = a.epoch

        own_redis.stop()
        assert not await a.ping()
        with pytest.raises(EngineUnavailable):
            await a.publish(Publication(key="k", events=(draft(2),)))
        for call in (
            a.head(),
            a.read_after(0, 10),
            a.board_page(0, 10),
            a.board_player("x"),
            a.online_count(),
            a.presence_poll("x"),
        ):
            with pytest.raises(EngineUnavailable):
                await call
        await a.presence_enter("quinn")  # recorded locally, synced when Redis is back
        await a.presence_leave("pat")
        await a.presence_enter("pat")

        own_redis.start()  # same port, no persistence: a Redis that lost its data
        await wait_until(a.ping, 10, "Redis back")
        [after] = await a.publish(Publication(key="k", events=(draft(3),)))
        assert a.epoch != old_epoch
        await on_b.wait_for(lambda ev: any(e.text == after.text for e in ev), 5, "B live again")
        # the presence of A's players was re-synced into the new Redis
        await on_b.wait_for(
            lambda ev: (
                {("player:online", "pat"), ("player:online", "quinn")} <= set(presence_of(ev[2:]))
            ),
            5,
            "presence re-synced",
        )
        assert await b.online_count() == 2
        marker = await on_b.flush(a)
        new = on_b.events[2:]
        assert on_b.events[:2][1].text == before.text
        assert seqs(new) == list(range(1, marker.seq + 1))
        assert {e.cursor.rsplit(".", 1)[0] for e in new} == {a.epoch}
    finally:
        for engine in (a, b):
            with contextlib.suppress(Exception):
                await engine.stop()


async def test_start_while_redis_is_down(own_redis: RedisServer) -> None:
    own_redis.stop()
    a = RedisEngine(own_redis.url, backfill_interval=0.2)
    await a.start()  # does not raise: readiness says no, the tasks keep trying
    try:
        assert not await a.ping()
        on_a = Collector(a)
        own_redis.start()
        await wait_until(a.ping, 10, "Redis back")
        b = RedisEngine(own_redis.url)
        await b.start()
        try:

            async def a_is_live() -> bool:
                return (
                    a._live_epoch is not None
                    and a._subscribed is not None
                    and a._subscribed.is_set()
                )

            await wait_until(a_is_live, 5, "A live")
            [event] = await b.publish(Publication(events=(draft(1),)))
            await on_a.wait_count(1)
            assert on_a.events[0].text == event.text
        finally:
            await b.stop()
    finally:
        await a.stop()


async def test_board_after_data_loss_is_incomplete_until_a_rebuild_swaps_it_in(
    make_redis: MakeRedis, admin: aioredis.Redis
) -> None:
    """A Redis that lost its data refills its board one published row at a time: that board
    is partial, and every read says so (the service then reads SQL), until a rebuild."""
    a = await make_redis()
    full = [BoardEntry(f"p{i}", f"P{i}", 1000.0 + i, 0, 0, 0, 0, 1) for i in range(5)]
    await a.board_replace(rows(*full))
    assert (await a.board_page(0, 10))[1] == 5

    await admin.flushall()
    await a.publish(Publication(board=(BoardEntry("p1", "P1", 1500.0, 1, 0, 0, 1, 2),)))
    for read in (a.board_page(0, 10), a.board_player("p1"), a.board_around("p1", 2)):
        with pytest.raises(BoardIncomplete):
            await read

    # The rebuild loads the truth (SQL, which has p1's new row) and marks the board whole.
    newer = BoardEntry("p1", "P1", 1500.0, 1, 0, 0, 1, 2)
    await a.board_replace(rows(*[newer if e.player_id == "p1" else e for e in full]))
    page, total = await a.board_page(0, 10)
    assert total == 5
    assert page[0] == (1, newer)
    assert await a.board_player("p3") == (3, full[3])
