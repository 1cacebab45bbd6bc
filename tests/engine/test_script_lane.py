"""A script's calls on a connection of their own, in batches (engine/redis/script_lane.py), the
path of every stream admission on the Redis engine. What can go wrong with one connection
shared by many calls is a reply given to the wrong call: after a batch cut short by a timeout
or a lost connection, replies of the old batch may still arrive. Against a real redis-server:
each call gets its own reply, its own error, or EngineUnavailable, whatever happens between
and during the batches."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import DataError, ResponseError

from quart_app.engine.base import EngineUnavailable
from quart_app.engine.redis.connection import bounded
from quart_app.engine.redis.limits import RedisLimits
from quart_app.engine.redis.script_lane import ScriptLane

from ..helpers import eventually
from ..redis_hold import Held
from ..services import RedisServer

ECHO = "return {ARGV[1], tonumber(ARGV[2]) + 1}"


def within(seconds: float) -> Any:
    """`bounded` with a shorter bound (bounded itself waits 5 s)."""

    async def run(call: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(seconds):
                return await bounded(call)
        except TimeoutError as exc:
            raise EngineUnavailable("redis: no answer in time") from exc

    return run


@pytest.fixture(name="client")
async def _client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


def new_script(client: aioredis.Redis, body: str = ECHO) -> Any:
    """A script Redis has not seen yet (its text is new): the first call meets NOSCRIPT."""
    return client.register_script(f"-- {uuid.uuid4()}\n{body}")


async def test_each_call_gets_its_own_reply_or_error_in_few_round_trips(
    client: aioredis.Redis,
) -> None:
    lane = ScriptLane(new_script(client))
    try:
        answers = await asyncio.gather(
            *(lane([], [f"c{n}", n]) for n in range(200)),
            lane([], ["bad", "not a number"]),
            return_exceptions=True,
        )
        assert answers[:200] == [[f"c{n}".encode(), n + 1] for n in range(200)]
        assert isinstance(answers[200], ResponseError)
        assert lane.batches <= 3, lane.batches  # (all in one; NOSCRIPT loads, and resends)
        assert await lane([], ["alone", 41]) == [b"alone", 42]
    finally:
        await lane.close()


async def test_calls_made_while_a_batch_is_in_flight_go_together_in_the_next(
    client: aioredis.Redis,
) -> None:
    lane = ScriptLane(new_script(client))
    try:
        await lane([], ["warm", 0])  # (the script loaded)
        first = asyncio.ensure_future(lane([], ["first", 0]))
        before = lane.batches
        for _ in range(1000):  # until the first batch is written (no reply can come yet)
            if lane.batches > before:
                break
            await asyncio.sleep(0)
        later = [lane([], [f"l{n}", n]) for n in range(50)]
        answers = await asyncio.gather(first, *later)
        assert answers == [[b"first", 1]] + [[f"l{n}".encode(), n + 1] for n in range(50)]
        assert lane.batches - before == 2  # the first, then the 50 together
    finally:
        await lane.close()


async def test_a_call_with_an_argument_redis_cannot_take_fails_alone(
    client: aioredis.Redis,
) -> None:
    lane = ScriptLane(new_script(client))
    try:
        calls = [lane.submit([], ["a", 1]), lane.submit([], ["b", None]), lane.submit([], ["c", 3])]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        assert answers[0] == [b"a", 2] and answers[2] == [b"c", 4]
        assert isinstance(answers[1], DataError)
        assert await lane([], ["d", 4]) == [b"d", 5]
    finally:
        await lane.close()


async def test_scripts_flushed_by_redis_are_loaded_again(client: aioredis.Redis) -> None:
    lane = ScriptLane(new_script(client))
    try:
        assert await lane([], ["a", 1]) == [b"a", 2]
        await client.script_flush()
        assert await asyncio.gather(lane([], ["b", 2]), lane([], ["c", 3])) == [
            [b"b", 3],
            [b"c", 4],
        ]
    finally:
        await lane.close()


async def test_a_connection_the_server_closed_is_replaced_before_the_next_batch(
    client: aioredis.Redis,
) -> None:
    lane = ScriptLane(new_script(client))
    try:
        assert await lane([], ["a", 1]) == [b"a", 2]
        killed = await client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert killed >= 1
        assert await lane([], ["b", 2]) == [b"b", 3]  # not EngineUnavailable
    finally:
        await lane.close()


async def test_a_batch_cut_short_never_hands_its_late_replies_to_later_calls(
    client: aioredis.Redis,
) -> None:
    lane = ScriptLane(new_script(client), bound=0.2)
    try:
        await lane([], ["warm", 0])
        held = await Held.hold(client, 600)
        with pytest.raises(EngineUnavailable):
            await lane([], ["late", 1])  # its reply comes after the bound
        await held.released()
        assert await lane([], ["next", 2]) == [b"next", 3]  # its own, not "late"'s
    finally:
        await lane.close()


async def test_closing_fails_waiting_calls_as_unavailable_and_refuses_new_ones(
    client: aioredis.Redis,
) -> None:
    lane = ScriptLane(new_script(client))
    await lane([], ["warm", 0])
    held = await Held.hold(client, 300)
    before = lane.batches
    out = asyncio.ensure_future(lane([], ["out", 1]))  # a batch waiting for its replies
    await written(lane, before)
    queued = asyncio.ensure_future(lane([], ["queued", 2]))  # waiting for the next batch
    await lane.close()  # (the engine stopping)
    for call in (out, queued):
        with pytest.raises(EngineUnavailable):
            await call  # not a CancelledError that would end the caller's task
    with pytest.raises(EngineUnavailable):
        await lane([], ["after", 3])
    await held.released()


async def test_a_call_whose_caller_left_before_its_batch_is_not_sent(
    client: aioredis.Redis,
) -> None:
    lane = ScriptLane(new_script(client, "return redis.call('INCR', KEYS[1])"))
    try:
        await lane(["sent"], [])
        first = lane.submit(["sent"], [])  # this one goes out first
        left = lane.submit(["left"], [])
        left.cancel()  # its caller gave up before the batch was written
        assert await first == 2
        assert await client.get("left") is None
    finally:
        await lane.close()


async def test_redis_down_is_engine_unavailable_and_back_it_serves_again() -> None:
    server = RedisServer()
    server.start()
    client = aioredis.from_url(server.url)
    lane = ScriptLane(new_script(client), bound=2)
    try:
        assert await lane([], ["a", 1]) == [b"a", 2]
        server.stop()
        with pytest.raises(EngineUnavailable):
            await lane([], ["b", 2])
        server.start()  # (same port, no data: the script is gone too)
        assert await lane([], ["c", 3]) == [b"c", 4]
    finally:
        await lane.close()
        await client.aclose()
        server.stop()


# Between batches of concurrent calls: nothing, the script cache flushed, the lane's
# connection killed, or Redis held past the lane's bound while a batch is out.
STEPS = st.lists(
    st.tuples(st.integers(1, 30), st.sampled_from(["none", "flush", "kill", "hold"])),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_whatever_happens_a_call_gets_its_own_reply_or_engine_unavailable(
    redis_url: str, steps: list[tuple[int, str]]
) -> None:
    async def scenario() -> None:
        client = aioredis.from_url(redis_url)
        lane = ScriptLane(new_script(client), bound=0.15)
        try:
            for step, (size, fault) in enumerate(steps):
                if fault == "flush":
                    await client.script_flush()
                elif fault == "kill":
                    await client.execute_command(
                        "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
                    )
                held = await Held.hold(client, 300) if fault == "hold" else None
                tags = [f"{step}-{n}-{uuid.uuid4().hex[:6]}" for n in range(size)]
                answers = await asyncio.gather(
                    *(lane([], [tag, n]) for n, tag in enumerate(tags)), return_exceptions=True
                )
                for n, (tag, answer) in enumerate(zip(tags, answers, strict=True)):
                    if isinstance(answer, EngineUnavailable):
                        continue  # (allowed: Redis did not answer in time or hung up)
                    assert answer == [tag.encode(), n + 1]
                if held is not None:
                    await held.released()
                else:
                    assert not any(isinstance(a, BaseException) for a in answers), answers
        finally:
            await lane.close()
            await client.aclose()

    asyncio.run(scenario())


async def test_admissions_behind_a_held_redis_fail_open_within_two_bounds(
    client: aioredis.Redis,
) -> None:
    """The lane alone bounds an admission (no timer of its own per call: 10,000 of them cost
    half an admission's CPU): one in flight, and one queued behind it, each come back within
    two bounds, admitted open and counted here."""
    limits = RedisLimits(client, f"t{uuid.uuid4().hex[:6]}:", "i1", within(0.3), lane_bound=0.3)
    try:
        assert await limits.admit("s:warm", 5)  # (synced: nothing dirty)
        held = await Held.hold(client, 1500)
        began = loop_time()
        before = limits._admit.batches
        first = asyncio.ensure_future(limits.admit("s:ann", 5))
        await written(limits._admit, before)  # (its batch leaves first)
        second = asyncio.ensure_future(limits.admit("s:bob", 5))
        assert await asyncio.wait_for(asyncio.gather(first, second), 3) == [True, True]
        assert loop_time() - began < 2 * 0.3 + 0.5
        await held.released()
        assert limits._local == {"s:warm": 1, "s:ann": 1, "s:bob": 1}
    finally:
        await limits.close()


async def written(lane: ScriptLane, before: int) -> None:
    """Until the lane has written a batch more than `before`."""

    async def more() -> bool:
        return lane.batches > before

    await eventually(more, 5, "a batch written")


def loop_time() -> float:
    return asyncio.get_running_loop().time()
