"""The JSON API verifies a token once and remembers it until its `exp` (a game server sends
the same token with every result; verifying it was a sixth of a result's CPU), and never
longer: an expired token is refused with 401 as before."""

from __future__ import annotations

from typing import Any

import pytest

from quart_app.auth import Authenticator

from ..helpers import Api, assert_problem, eventually


async def test_the_same_token_is_verified_once(
    memory_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[str] = []
    real = Authenticator.verify

    def counting(self: Authenticator, token: str) -> Any:
        verified.append(token)
        return real(self, token)

    monkeypatch.setattr(Authenticator, "verify", counting)
    token = memory_api.token("game-server-2", "matches:write")
    for n in range(3):
        reply = await memory_api.post(
            "/api/matches", {"match_id": f"t{n}", "player_ids": ["a", "b"]}, token=token
        )
        assert reply.status == 201, reply
    assert verified.count(token) == 1


async def test_a_remembered_token_is_refused_once_it_expired(memory_api: Api) -> None:
    token = memory_api.token("game-server-3", "matches:write", ttl_seconds=1)
    reply = await memory_api.post(
        "/api/matches", {"match_id": "e1", "player_ids": ["a", "b"]}, token=token
    )
    assert reply.status == 201, reply

    async def refused() -> bool:
        again = await memory_api.post(
            "/api/matches", {"match_id": "e1", "player_ids": ["a", "b"]}, token=token
        )
        assert again.status in (200, 401), again
        return again.status == 401

    await eventually(refused, 15, "the expired token to be refused", interval=0.1)
    last = await memory_api.post(
        "/api/matches", {"match_id": "e1", "player_ids": ["a", "b"]}, token=token
    )
    assert_problem(last, 401)


async def test_a_bad_token_is_refused_every_time(memory_api: Api) -> None:
    for _ in range(2):
        reply = await memory_api.post(
            "/api/matches", {"match_id": "x", "player_ids": ["a", "b"]}, token="not-a-jwt"
        )
        assert_problem(reply, 401)
