"""A ScriptLane on a RESP3 client (REDIS_URL ...?protocol=3), engine/redis/script_lane.py `_read`:
a script that returns a RESP3 boolean false (`#f`, after redis.setresp(3)) must get False, as
redis-py's parser gave. Without a `notEnoughData` sentinel, hiredis' `gets()` returns False
both for "no whole reply yet" and for that reply: the `#f` would be dropped and the next reply
given to its call (a reply to the wrong call)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from quart_app.engine.redis.script_lane import ScriptLane

from .test_script_lane import new_script

FALSE_OR_TEXT = """redis.setresp(3)
if ARGV[1] == 'false' then return false end
return string.rep('x', tonumber(ARGV[2]))"""


@pytest.fixture(name="resp3_client")
async def _resp3_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url, protocol=3)
    yield client
    await client.aclose()


async def test_a_resp3_false_reply_goes_to_its_own_call(resp3_client: aioredis.Redis) -> None:
    lane = ScriptLane(new_script(resp3_client, FALSE_OR_TEXT), bound=2)
    try:
        await lane([], ["warm", 1])  # (the script loaded: both calls below go in one batch)
        # The second reply is larger than one read (64 KiB): it arrives after the #f.
        calls = [lane.submit([], ["false", 0]), lane.submit([], ["text", 200_000])]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        assert answers[0] is False
        assert answers[1] == b"x" * 200_000
    finally:
        await lane.close()
