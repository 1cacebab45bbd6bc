"""`Engine.publish_many`: a group of publications in one round trip (the result writer's
group), each exactly as `publish` would have applied it, in order."""

from __future__ import annotations

import json
from typing import Any

from quart_app.domain.publication import Publication
from quart_app.engine.base import Engine, Event
from tests.services import RedisClusterSet

from .conftest import Collector, ready_board, rows
from .test_rank_slots import entry, ranked


def data(events: list[Event]) -> list[dict[str, Any]]:
    return [json.loads(event.text)["data"] for event in events]


async def test_each_publication_applies_in_order_with_the_ranks_of_its_own_step(
    engine: Engine,
) -> None:
    await engine.board_replace(rows(entry("a", 1300), entry("b", 1200), entry("c", 1200)))
    await ready_board(engine)
    collector = Collector(engine)
    first = Publication(board=(entry("c", 1400, 2),), events=(ranked("c"),), key="k1")
    replies = await engine.publish_many(
        [
            first,
            # b overtakes everyone, on the board the first one left: c 1, a 2, b 3
            Publication(board=(entry("b", 1500, 2),), events=(ranked("b"),), key="k2"),
            first,  # applied already: nothing again
            Publication(board=(entry("d", 1250),), events=(ranked("d"),), key="k3"),
        ]
    )
    assert not any(isinstance(reply, Exception) for reply in replies), replies
    events = [reply for reply in replies if not isinstance(reply, Exception)]
    assert [len(e) for e in events] == [1, 1, 0, 1]
    assert [(d["player_id"], d["previous_rank"], d["rank"]) for d in data(sum(events, []))] == [
        ("c", 3, 1),
        ("b", 3, 1),
        ("d", None, 4),
    ]
    seqs = [event.seq for event in sum(events, [])]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    delivered = await collector.wait_count(3)
    assert [event.seq for event in delivered] == seqs
    page, total = await engine.board_page(0, 10)
    assert [(rank, e.player_id) for rank, e in page] == [(1, "b"), (2, "c"), (3, "a"), (4, "d")]
    assert total == 4


async def test_on_a_cluster_and_on_a_node_without_the_script_they_apply_in_order(
    make_redis: Any, redis_cluster: RedisClusterSet, cluster_url: str
) -> None:
    """A cluster client refuses EVALSHA in a pipeline: there, one call each (which loads a
    script a node lost: a restart, a failover to a fresh replica)."""
    engine = await make_redis(url=cluster_url)
    for port in redis_cluster.alive():
        redis_cluster.cli(port, "SCRIPT", "FLUSH")
    replies = await engine.publish_many(
        [
            Publication(board=(entry("a", 1300),), events=(ranked("a"),), key="k1"),
            Publication(board=(entry("b", 1400),), events=(ranked("b"),), key="k2"),
        ]
    )
    assert not any(isinstance(reply, Exception) for reply in replies), replies
    assert [(d["player_id"], d["rank"]) for reply in replies for d in data(reply)] == [  # type: ignore[arg-type]
        ("a", 1),
        ("b", 1),
    ]
