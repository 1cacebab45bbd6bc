"""PROTOCOL 3.6 rate limits through the app (both engines): every POST/PUT per token sub,
POST /api/publish on its own limit; over it a 429 with Retry-After and the RateLimit fields,
and the refused request changes nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from quart import Quart

from ..helpers import Reply, assert_problem, log_events, serving, sql_matches

POLICY = re.compile(r'^"(writes|publish)";q=(\d+);w=1$')
STATE = re.compile(r'^"(writes|publish)";r=(\d+);t=(\d+)$')


async def _until_refused(send: Callable[[int], Any], most: int = 2000) -> tuple[list[Reply], Reply]:
    """Send requests until one is refused (a loaded machine refills the quota meanwhile, so
    the count of allowed ones is at least the burst, not exactly it)."""
    allowed: list[Reply] = []
    for n in range(most):
        reply: Reply = await send(n)
        if reply.status == 429:
            return allowed, reply
        allowed.append(reply)
    raise AssertionError(f"no 429 after {most} requests")


def _assert_over_limit(reply: Reply, name: str, quota: int) -> None:
    assert_problem(reply, 429)
    retry_after = reply.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    assert reply.headers["RateLimit-Policy"] == f'"{name}";q={quota};w=1'
    state = STATE.match(reply.headers["RateLimit"])
    assert state and state[1] == name and state[2] == "0" and int(state[3]) >= 1


async def test_writes_over_the_limit_are_refused_and_change_nothing(
    make_app: Callable[..., Quart], engine_url: str | None
) -> None:
    async with serving(make_app(redis_url=engine_url, rate_limit_writes=5)) as api:
        allowed, refused = await _until_refused(
            lambda n: api.post("/api/matches", {"match_id": f"m{n}", "player_ids": ["a", "b"]})
        )
        assert len(allowed) >= 5
        assert all(reply.status in (200, 201) for reply in allowed)
        # every answer says where the caller stands; the first of a fresh quota: 4 left
        assert allowed[0].headers["RateLimit-Policy"] == '"writes";q=5;w=1'
        assert STATE.match(allowed[0].headers["RateLimit"])[2] == "4"  # type: ignore[index]
        _assert_over_limit(refused, "writes", 5)
        # the refused create changed nothing: not in SQL, no event
        refused_id = f"m{len(allowed)}"
        assert refused_id not in await sql_matches(api.rt.store)
        created = [
            e["data"]["match_id"]
            for e in await log_events(api.rt.engine)
            if e["event"] == "match:created"
        ]
        assert refused_id not in created and len(created) == len(allowed)


async def test_a_refused_publish_emits_nothing(
    make_app: Callable[..., Quart], engine_url: str | None
) -> None:
    async with serving(make_app(redis_url=engine_url, rate_limit_publish=3)) as api:

        def publish(n: int) -> Any:
            body = {"room": "matches", "event": "announcement", "data": {"n": n}}
            return api.post("/api/publish", body, token="admin")

        allowed, refused = await _until_refused(publish)
        assert {reply.status for reply in allowed} == {202}
        _assert_over_limit(refused, "publish", 3)
        sent = [
            e["data"]["n"] for e in await log_events(api.rt.engine) if e["event"] == "announcement"
        ]
        assert sent == list(range(len(allowed)))


async def test_publish_and_writes_have_separate_limits(
    make_app: Callable[..., Quart], engine_url: str | None
) -> None:
    app = make_app(redis_url=engine_url, rate_limit_writes=2, rate_limit_publish=1000)
    async with serving(app) as api:
        await _until_refused(lambda n: api.post(f"/api/matches/x{n}/start", token="admin"))
        reply = await api.post(
            "/api/publish", {"room": "matches", "event": "announcement", "data": {}}, token="admin"
        )
        assert reply.status == 202
        assert reply.headers["RateLimit-Policy"] == '"publish";q=1000;w=1'


async def test_the_limit_is_per_sub(make_app: Callable[..., Quart], engine_url: str | None) -> None:
    async with serving(make_app(redis_url=engine_url, rate_limit_writes=3)) as api:
        await _until_refused(lambda n: api.post(f"/api/matches/x{n}/start"))
        other = api.token("other-game-server", "matches:write")
        reply = await api.post("/api/matches", {"player_ids": ["a", "b"]}, token=other)
        assert reply.status == 201
        assert STATE.match(reply.headers["RateLimit"])[2] == "2"  # type: ignore[index]


async def test_anonymous_dev_tokens_are_limited_by_address(
    make_app: Callable[..., Quart],
) -> None:
    async with serving(make_app(jwt_secret=None, rate_limit_writes=2)) as api:
        allowed, refused = await _until_refused(
            lambda n: api.post("/api/dev/token", {"sub": f"u{n}", "scope": ""}, token=None)
        )
        assert allowed and {reply.status for reply in allowed} == {200}
        _assert_over_limit(refused, "writes", 2)


async def test_zero_turns_a_limit_off_and_reads_are_never_limited(
    make_app: Callable[..., Quart],
) -> None:
    async with serving(make_app(rate_limit_writes=0, rate_limit_publish=1)) as api:
        for n in range(60):
            reply = await api.post(f"/api/matches/x{n}/start")
            assert reply.status == 404 and "RateLimit" not in reply.headers
        for _ in range(5):
            reply = await api.get("/api/leaderboard", token="reader")
            assert reply.status == 200 and "RateLimit" not in reply.headers


async def test_unknown_routes_are_not_counted(make_app: Callable[..., Quart]) -> None:
    async with serving(make_app(rate_limit_writes=1)) as api:
        for _ in range(5):
            assert (await api.post("/api/nowhere", {})).status == 404
            assert (await api.put("/api/matches", {})).status == 405
        reply = await api.post("/api/matches", {"player_ids": ["a", "b"]})
        assert reply.status == 201


async def test_puts_count_and_the_refusal_comes_before_the_body_is_read(
    make_app: Callable[..., Quart],
) -> None:
    async with serving(make_app(rate_limit_writes=2)) as api:
        await api.create("m1", "ann", "bob")
        owner = api.token("ann")
        allowed, refused = await _until_refused(
            lambda n: api.put("/api/players/ann", {"name": f"Ann {n}"}, token=owner)
        )
        _assert_over_limit(refused, "writes", 2)
        assert {reply.status for reply in allowed} == {200}
        # the same bad body: a 400 while allowed (it was read), a 429 once over (it was not)
        allowed, refused = await _until_refused(
            lambda n: api.request(
                "PUT",
                "/api/players/ann",
                data="{not json",
                token=owner,
                headers={"Content-Type": "application/json"},
            )
        )
        assert {reply.status for reply in allowed} <= {400}
        _assert_over_limit(refused, "writes", 2)
