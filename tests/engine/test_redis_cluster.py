"""Redis Cluster (REDIS_URL=redis+cluster://): the engine on a real three-master cluster with a
replica each. The whole conformance suite runs here again on the cluster; then what only a
cluster has: one slot per deployment, the bus on sharded pub/sub, a master failing over."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from quart_app.engine.base import BoardEntry, EngineUnavailable, Publication
from quart_app.engine.redis import RedisEngine
from quart_app.engine.redis.cluster import ClusterURL, hash_tagged
from tests.services import RedisClusterSet, wait_until

from . import test_conformance, test_redis_engine
from .conftest import Collector, draft

MakeRedis = Callable[..., Awaitable[RedisEngine]]

# The conformance suite, collected again in this module, where `backend` is the cluster; but
# the board-order property (the same Lua as on one Redis, and 30 s here: a new cluster client
# per example).
globals().update(
    {
        name: test
        for name, test in vars(test_conformance).items()
        if name.startswith("test_") and name != "test_board_order_property"
    }
)

# Calls between instances (a subscribe routed to the instance holding the stream) on the
# cluster: the request and the answer go over sharded pub/sub, SPUBLISH says who listens.
test_calls_reach_the_instance_named = test_redis_engine.test_calls_reach_the_instance_named


@pytest.fixture(name="backend")
def _backend(cluster_url: str) -> str:
    return cluster_url


@pytest.fixture(name="redis_url")
def _redis_url(cluster_url: str) -> str:
    """make_redis builds its engines on the cluster too."""
    return cluster_url


def test_cluster_urls_are_parsed_and_bad_ones_refused() -> None:
    from quart_app.config import ConfigError, load_settings

    url = ClusterURL.parse("redis+cluster://u:p%40ss@h1:7000,[::1]:7001")
    assert url.nodes == [("h1", 7000), ("::1", 7001)]
    assert (url.username, url.password) == ("u", "p@ss")
    assert ClusterURL.parse("redis+cluster://h:1/0").nodes == [("h", 1)]
    assert load_settings(redis_url="redis+cluster://h:1").redis_url == "redis+cluster://h:1"
    for bad in ("redis+cluster://h", "redis+cluster://h:1/2", "redis+cluster://h:1,:2"):
        with pytest.raises(ConfigError, match=r"\bREDIS_URL\b"):
            load_settings(redis_url=bad)


def test_the_prefix_gets_a_hash_tag() -> None:
    assert hash_tagged("lrp:") == "{lrp}:"
    assert hash_tagged("game-eu") == "{game-eu}"
    assert hash_tagged("{mine}:x:") == "{mine}:x:"  # a tag of the operator's own is kept
    assert hash_tagged("{}:") == "{{}}:"  # an empty tag hashes the whole key: not a tag
    assert hash_tagged("") == "{lrp}:"


async def test_one_deployment_lives_in_one_slot_and_its_bus_is_sharded(
    make_redis: MakeRedis, cluster_url: str
) -> None:
    """Two instances, results with board rows and presence: every key of the deployment in
    one slot, the events on both instances once and in order, both boards equal."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a = await make_redis(prefix=prefix)
    b = await make_redis(prefix=prefix)
    on_a, on_b = Collector(a), Collector(b)
    for n in range(20):
        row = BoardEntry(f"p{n % 5}", f"P{n % 5}", 1200.0 + n, n, 0, 0, n, version=n + 1)
        await (a if n % 2 else b).publish(Publication(events=(draft(n),), board=(row,)))
    await b.presence_enter("p1")
    for collector in (on_a, on_b):
        await collector.wait_for(lambda ev: len(ev) >= 21, 10, "20 results and an online")
        same = [e for e in collector.events if e.name == "announcement"]
        assert [e.seq for e in collector.events] == list(range(1, len(collector.events) + 1))
        assert len(same) == 20
    assert await a.board_page(0, 10) == await b.board_page(0, 10)
    assert (await a.board_page(0, 10))[1] == 5
    assert await a.online_count() == 1

    admin = RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in ClusterURL.parse(cluster_url).nodes],
        decode_responses=True,
    )
    try:
        tag = "{" + prefix[:-1] + "}:"
        keys = await admin.keys(tag + "*", target_nodes=RedisCluster.PRIMARIES)
        assert len(keys) >= 5, keys  # meta, log, board, players, presence...
        slots = {await admin.cluster_keyslot(key) for key in keys}
        assert len(slots) == 1, slots
        # sharded pub/sub: the bus channel has subscribers on its shard, none on plain pub/sub
        shard_channels = await admin.pubsub_shardchannels(
            tag + "*", target_nodes=RedisCluster.PRIMARIES
        )
        assert tag + "bus" in shard_channels, shard_channels
        assert await admin.pubsub_channels(tag + "*", target_nodes=RedisCluster.PRIMARIES) == []
        # the publish script itself announces on the shard channel (SPUBLISH, not PUBLISH)
        shard = admin.pubsub()
        await shard.ssubscribe(tag + "bus")
        await shard.get_sharded_message(timeout=5)  # the confirmation
        [event] = await a.publish(Publication(events=(draft(99),)))
        deadline = time.monotonic() + 10
        data = "~"
        while data.startswith("~") and time.monotonic() < deadline:  # ~: liveness probes
            message = await shard.get_sharded_message(timeout=1)
            data = message["data"] if message else "~"
        await shard.aclose()
        assert event.text in data, data
    finally:
        await admin.aclose()


async def test_a_moved_slot_is_followed_and_nothing_is_missed(
    make_redis: MakeRedis, redis_cluster: RedisClusterSet, cluster_url: str
) -> None:
    """The server ends a shard subscription when its slot moves (SUNSUBSCRIBE): the listener
    subscribes again where the slot is now, and catches up what was published meanwhile."""
    prefix = f"m{uuid.uuid4().hex[:8]}:"
    a = await make_redis(prefix=prefix, backfill_interval=0.2)
    b = await make_redis(prefix=prefix, backfill_interval=0.2)
    on_b = Collector(b)
    await a.publish(Publication(events=(draft(0),)))
    await on_b.wait_count(1)

    key = "{" + prefix[:-1] + "}:meta"
    source = redis_cluster.master_of(key)
    target = next(
        port for port in redis_cluster.alive()
        if port != source and redis_cluster.cli(port, "ROLE").startswith("master")
    )  # fmt: skip
    moved = redis_cluster.move_slot_of(key, source, target)
    assert redis_cluster.master_of(key) == target, moved
    for n in range(1, 11):
        await publish_retrying(a, n, 20)
    await on_b.wait_count(11, timeout=20)
    assert [e.seq for e in on_b.events] == list(range(1, 12))
    # both instances subscribed again, on the slot's new master
    bus = "{" + prefix[:-1] + "}:bus"

    def subscribers_on_target() -> int:
        return int(redis_cluster.cli(target, "PUBSUB", "SHARDNUMSUB", bus).split()[-1])

    wait_until(lambda: subscribers_on_target() >= 2, 20, "the bus subscribed on the new master")


async def publish_retrying(engine: RedisEngine, n: int, timeout: float) -> None:
    """The outbox's retry, in short: a publication that fails during a failover is tried
    again until it goes through."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await engine.publish(Publication(events=(draft(n),), key=f"k{n}"))
            return
        except EngineUnavailable:
            assert time.monotonic() < deadline, f"publication {n} failed for {timeout} s"
            await asyncio.sleep(0.2)


@pytest.fixture(name="own_cluster")
def _own_cluster() -> Iterator[RedisClusterSet]:
    cluster = RedisClusterSet()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.mark.slow
async def test_the_engine_follows_a_master_failing_over(
    make_redis: MakeRedis, own_cluster: RedisClusterSet
) -> None:
    """kill -9 of the master serving the deployment's slot: its replica is promoted, writes
    resume there, and the listeners go on with no silent gap (the same epoch continued, or
    a new one)."""
    a = await make_redis(own_cluster.url, backfill_interval=0.2)
    b = await make_redis(own_cluster.url, backfill_interval=0.2)
    on_a, on_b = Collector(a), Collector(b)
    for n in range(5):
        await a.publish(Publication(events=(draft(n),), key=f"k{n}"))
    await on_b.wait_count(5)
    killed = own_cluster.kill_master_of("{lrp}:meta")
    went = time.monotonic()
    for n in range(5, 15):
        await publish_retrying(b if n % 2 else a, n, 30)
    resumed = time.monotonic() - went
    await asyncio.to_thread(own_cluster.promoted_after, "{lrp}:meta", killed)
    for collector, engine in ((on_a, a), (on_b, b)):
        await collector.flush(engine, timeout=20)
        by_epoch: dict[str, list[int]] = {}
        for event in collector.events:
            by_epoch.setdefault(event.cursor.rpartition(".")[0], []).append(event.seq)
        for seqs in by_epoch.values():  # within an epoch: gapless, once, in order
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), by_epoch
        numbers = [announced(e.text) for e in collector.events if e.name == "announcement"]
        assert sorted(numbers) == list(range(15)), numbers  # each once: none lost, no repeat
    print(f"writes resumed {resumed:.1f} s after the kill; epochs seen: {len(by_epoch)}")


def announced(text: str) -> int:
    return int(json.loads(text)["data"]["n"])
