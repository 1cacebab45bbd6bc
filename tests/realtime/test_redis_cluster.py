"""Two real instances on a real Redis Cluster (three masters, a replica each): results POSTed
throughout, clients on SSE, WebSocket and long-poll (the fault suite's traffic and checks);
then the master serving the deployment's slot is killed and its replica promoted.

What must hold: every client receives every event once and in order (or, across a failover
that lost writes, is told `stream:reset`); no 5xx but 503 with Retry-After; every 2xx result
in SQL once; both boards equal to SQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from ..fault_checks import assert_nothing_lost, results_grow
from ..fault_traffic import Traffic
from ..helpers import eventually
from ..services import LiveServer, RedisClusterSet
from .test_faults_redis import instances

DEPLOYMENT_KEY = "{lrp}:meta"  # the default prefix lrp: becomes {lrp}: on a cluster


async def test_two_instances_on_a_cluster_deliver_every_event_once_in_order(
    cluster_url: str, live_servers: Callable[..., LiveServer]
) -> None:
    servers = instances(live_servers, cluster_url)
    database_url = servers[0].env["DATABASE_URL"]
    async with Traffic(servers) as traffic:
        await results_grow(traffic, 30, 60, "results on the cluster")
        traffic.stop_writing()
        facts = await assert_nothing_lost(traffic, servers, database_url)
    assert not traffic.written.unavailable, facts  # nothing failed: no 503 either
    for name, verdict in traffic.verdicts().items():  # every client saw events, no reset
        assert verdict["checked"] > 0 and not verdict["resets"], (name, verdict)
    print(f"cluster: {facts}")


@pytest.fixture(name="own_cluster")
def _own_cluster() -> Iterator[RedisClusterSet]:
    cluster = RedisClusterSet()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.mark.slow
async def test_a_master_failing_over_under_load_loses_nothing(
    own_cluster: RedisClusterSet, live_servers: Callable[..., LiveServer]
) -> None:
    servers = instances(live_servers, own_cluster.url)
    database_url = servers[0].env["DATABASE_URL"]
    async with Traffic(servers) as traffic:
        await results_grow(traffic, 15, 60, "results before the kill")
        killed = own_cluster.kill_master_of(DEPLOYMENT_KEY)
        went = time.monotonic()
        await results_grow(traffic, 15, 60, "results after the failover")
        resumed = time.monotonic() - went
        await asyncio.to_thread(own_cluster.promoted_after, DEPLOYMENT_KEY, killed)
        traffic.stop_writing()
        # Every 2xx result reached the reference and every client; assert_nothing_lost waits
        # again once the boards healed, for what was logged meanwhile (the relay's rows).
        await eventually(traffic.caught_up, 30, "every client caught up", interval=0.2)
        facts = await assert_nothing_lost(traffic, servers, database_url, resets_allowed=True)
    print(f"master {killed} killed: 15 more results {resumed:.1f}s later; {facts}")
