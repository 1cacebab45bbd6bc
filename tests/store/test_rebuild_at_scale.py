"""`rebuild` of a big board into Redis (issue 8): a reader polling the board all the while
never sees it empty or short, and the rebuilt board equals SQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis
from quart import Quart

from quart_app.store.board_reads import page
from quart_app.store.rebuild import rebuild

from ..helpers import eventually, seed_sqlite, serving

PLAYERS = 50_000


async def test_a_reader_never_sees_an_empty_or_short_board_during_a_rebuild(
    make_app: Callable[..., Quart], tmp_path: Path, redis_url: str
) -> None:
    await seed_sqlite(f"sqlite:///{tmp_path}/pulse.db", PLAYERS)  # the file make_app serves

    async with serving(make_app(redis_url=redis_url)) as api:

        async def start_up_rebuilt() -> bool:
            return (await api.rt.engine.board_page(0, 0))[1] == PLAYERS  # not BoardIncomplete

        await eventually(start_up_rebuilt, 120, "the start-up rebuild")
        prefix = api.rt.settings.redis_prefix
        redis = aioredis.Redis.from_url(redis_url)
        totals: list[int] = []
        staged_while_read: list[int] = []
        done = asyncio.Event()

        async def reader() -> None:
            while not done.is_set():
                reply = await api.get("/api/leaderboard?offset=49990&limit=20")
                assert reply.status == 200, reply
                totals.append(reply.body["total"])
                assert len(reply.body["entries"]) == 10, reply.body
                staged_while_read.append(int(await redis.zcard(prefix + "board:next")))

        reading = asyncio.create_task(reader())
        try:
            assert await rebuild(api.rt.store, api.rt.engine, api.rt.relay) == PLAYERS
        finally:
            done.set()
            await reading
            await redis.aclose()

        assert set(totals) == {PLAYERS}
        # the reads overlapped the staging: a half-built board existed while they ran
        assert any(0 < staged < PLAYERS for staged in staged_while_read), staged_while_read
        last = (await api.get("/api/leaderboard?offset=49990&limit=20")).body["entries"]
        expected, _ = await page(api.rt.store, 49990, 20)
        assert [(e["rank"], e["player_id"]) for e in last] == [
            (rank, entry.player_id) for rank, entry in expected
        ]
