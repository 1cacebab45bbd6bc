"""Redis Cluster (``REDIS_URL=redis+cluster://...``, PROTOCOL 6): the clients, the key prefix's
hash tag, and the bus on sharded pub/sub. Nothing else in the engine knows it runs on a cluster.

One deployment, one slot. Every Lua script touches the log, the board and the presence keys of
its deployment together (one publication appends to the log and moves board rows atomically),
and a cluster runs a script only on keys of one hash slot. So the key prefix gets a hash tag
(``lrp:`` becomes ``{lrp}:``): all the keys of one deployment, and its bus channel, live on the
one master serving that slot (and its replicas). A cluster gives such a deployment failover,
not write scaling: its writes and its bus are one shard's. Several deployments (prefixes) on
one cluster spread over its shards.

The bus runs on sharded pub/sub (SSUBSCRIBE/SPUBLISH, also inside the scripts), so a message
goes to the shard of its slot, not to every node. A shard subscription is a plain connection
to the master serving the channel's slot, opened after asking the cluster where that is now.
When that master dies, or the slot moves (Redis then sends SUNSUBSCRIBE), the subscription
fails, and the live feed's bus loop opens a new one, which asks the cluster again, and catches
up from the log: nothing published meanwhile is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from .connection import BusMessage, RedisConnection, Subscription, split_hosts_url

CLUSTER_SCHEME = "redis+cluster://"
# Connections per node. The cluster client's node pools do not wait for a free connection
# (redis-py has no blocking pool for them): past this, a command fails at once (a 503).
CLUSTER_POOL_SIZE = 500


@dataclass(frozen=True)
class ClusterURL:
    """``redis+cluster://[user:password@]host:port[,host:port...][/0]``: any reachable nodes of
    the cluster (the others are discovered). A cluster has database 0 only."""

    nodes: list[tuple[str, int]]
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> ClusterURL:
        nodes, username, password, path = split_hosts_url(url, CLUSTER_SCHEME, "cluster node")
        if path.strip("/") not in ("", "0"):
            raise ValueError(f"a Redis Cluster has database 0 only, not {path!r}")
        return cls(nodes, username, password)


def hash_tagged(prefix: str) -> str:
    """The prefix with a hash tag, so that every key of the deployment is in one slot:
    ``lrp:`` -> ``{lrp}:``; a prefix that has a tag already is kept."""
    start = prefix.find("{")
    if start != -1 and prefix.find("}", start + 2) != -1:
        return prefix  # a non-empty {tag}: Redis hashes only that
    name = prefix[:-1] if prefix.endswith(":") else prefix
    return "{" + (name or "lrp") + "}" + (":" if prefix.endswith(":") or not name else "")


class ShardSubscription(Subscription):
    """SSUBSCRIBE to one shard channel, on its own connection to the master serving the
    channel's slot (see the module docstring)."""

    def __init__(self, topology: RedisCluster, channel: str, node_kwargs: dict[str, Any]) -> None:
        self._topology = topology
        self._channel = channel
        self._node_kwargs = node_kwargs
        self._client: aioredis.Redis | None = None
        self._shard_pubsub: PubSub | None = None

    async def subscribe(self) -> None:
        # Ask where the slot is now: this runs after every failure of the previous
        # subscription, which is how a failover or a slot move is followed. (initialize()
        # first: only an initialized client closes its nodes on aclose().)
        await self._topology.initialize()
        await self._topology.nodes_manager.initialize()
        node: ClusterNode | None = self._topology.get_node_from_key(self._channel)
        if node is None:
            raise RedisConnectionError(f"no node serves the slot of {self._channel} now")
        self._client = aioredis.Redis(host=node.host, port=int(node.port), **self._node_kwargs)
        self._shard_pubsub = self._client.pubsub()
        await self._shard_pubsub.ssubscribe(self._channel)

    async def next_message(self, timeout: float | None) -> BusMessage | None:
        assert self._shard_pubsub is not None
        message = await self._shard_pubsub.get_message(timeout=timeout)
        if message is None:
            return None
        kind = message["type"]
        if kind == "ssubscribe":
            return "subscribed", str(message["channel"])
        if kind == "smessage":
            return "message", message["data"]
        if kind == "sunsubscribe":
            # The server dropped us: the slot moved to another node (resharding, or this
            # master was demoted). Fail, so that the caller subscribes again where it is now.
            raise RedisConnectionError(f"shard channel {self._channel} moved")
        return None

    async def close(self) -> None:
        if self._shard_pubsub is not None:
            await self._shard_pubsub.aclose()
        if self._client is not None:
            await self._client.aclose()


class ClusterConnection(RedisConnection):
    """The engine's clients on a Redis Cluster: `client` a RedisCluster for commands and
    scripts, the bus on sharded pub/sub (see the module docstring). Commands are not retried,
    as on one Redis (connection.py): a script that may have run must not run twice. MOVED
    and ASK redirections are followed (the command did not run), and a connection error makes
    the client ask the cluster for its slots again before the next command."""

    bus_publish = "SPUBLISH"

    def __init__(self, url: str, *, bus_health_check_interval: int) -> None:
        self.url = url
        self.sentinel = None
        parsed = ClusterURL.parse(url)
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": 2.0,
            "socket_timeout": None,  # see connection.py: timeouts are asyncio.timeout()
            "socket_keepalive": True,
            "username": parsed.username,
            "password": parsed.password,
        }
        startup = [ClusterNode(host, port) for host, port in parsed.nodes]
        cluster = RedisCluster(
            startup_nodes=startup,
            max_connections=CLUSTER_POOL_SIZE,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 0),
            **common,
        )
        # RedisCluster offers the command API the other modules use (scripts, SCARD,
        # SISMEMBER); subscriptions, publications and PING go through this class.
        self.client = cast(aioredis.Redis, cluster)
        self._cluster = cluster
        # A second cluster client, only for finding the bus's node: refreshing its slot map
        # does not disturb the commands in flight on the first.
        self._topology = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
            max_connections=4,
            retry=Retry(NoBackoff(), 0),
            **common,
        )
        self.bus_client = cast(aioredis.Redis, self._topology)
        self._node_kwargs = {
            **common,
            "health_check_interval": bus_health_check_interval,
            "retry": Retry(NoBackoff(), 0),
        }
        self._key_prefix = "{lrp}:"

    def key_prefix(self, prefix: str) -> str:
        self._key_prefix = hash_tagged(prefix)
        return self._key_prefix

    def subscription(self, channel: str, *, from_pool: bool = False) -> Subscription:
        kwargs = {**self._node_kwargs, "health_check_interval": 10} if from_pool else None
        return ShardSubscription(self._topology, channel, kwargs or self._node_kwargs)

    async def publish(self, channel: str, message: str) -> int:
        """SPUBLISH: how many subscribers of the channel's shard got it."""
        return int(await self._cluster.spublish(channel, message))

    async def ping(self) -> bool:
        """PING the master that serves this deployment's slot: the one its calls need."""
        await self._cluster.initialize()  # a no-op unless an error asked for a new slot map
        node = self._cluster.get_node_from_key(self._key_prefix + "meta")
        return bool(await self._cluster.execute_command("PING", target_nodes=node))

    async def close(self) -> None:
        for cluster in (self._topology, self._cluster):
            await cluster.aclose()
            # aclose() skips a client whose last command failed on a connection (it waits to
            # be initialized again): close its nodes' connections here in any case.
            await cluster.nodes_manager.aclose()
            await cluster.nodes_manager.aclose("startup_nodes")
