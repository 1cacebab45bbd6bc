"""The Redis board swap frees the replaced board off Redis's main thread (issue 8): at
1,000,000 players, RENAME over the live keys freed the old board inside the script, and
Redis answered nobody for seconds (the rebuild itself gave up: "no answer in time")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from quart_app.domain.board import BoardEntry
from quart_app.engine.board_state import BoardRows, board_row
from quart_app.engine.redis import RedisEngine

from ..helpers import eventually

BIG = 5000  # well over Redis's lazy-free threshold (64 elements)


async def lazily_freed(client: aioredis.Redis) -> int:
    stats = await client.info("memory")
    return int(stats["lazyfreed_objects"])


async def test_replacing_a_board_frees_the_old_one_in_the_background(
    make_redis: Callable[..., Awaitable[RedisEngine]], redis_url: str
) -> None:
    engine = await make_redis()
    rows = BoardRows(
        [
            board_row(BoardEntry(f"p{i:05d}", "n", 1000.0 + i % 300, 0, 0, 0, 0, 1))
            for i in range(BIG)
        ]
    )

    async def load() -> BoardRows:
        return rows

    await engine.board_replace(load)
    client = aioredis.Redis.from_url(redis_url)
    try:
        before = await lazily_freed(client)
        await engine.board_replace(load)

        async def old_board_freed() -> bool:  # the old zset and both hashes
            return await lazily_freed(client) >= before + 3

        await eventually(old_board_freed, 10, "the background thread to free the old board")
        ranked, total = await engine.board_page(0, 3)
        assert total == BIG and [e.player_id for _, e in ranked] == ["p00299", "p00599", "p00899"]
        assert not [key async for key in client.scan_iter("*retired*")]
    finally:
        await client.aclose()
