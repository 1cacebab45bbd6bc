"""The limits of PROTOCOL 3.6 when their store is away, and their settings."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from quart import Quart

from quart_app.config import ConfigError, load_settings

from ..helpers import serving
from ..services import RedisServer


async def test_writes_pass_unlimited_while_redis_is_down(
    make_app: Callable[..., Quart], own_redis: RedisServer
) -> None:
    app = make_app(redis_url=own_redis.url, rate_limit_writes=5)
    async with serving(app) as api:
        reply = await api.post("/api/matches", {"player_ids": ["a", "b"]})
        assert reply.status == 201 and reply.headers["RateLimit-Policy"] == '"writes";q=5;w=1'
        own_redis.stop()
        # fail open: the write needs only the database; no 429, no 500
        reply = await api.post("/api/matches", {"player_ids": ["c", "d"]})
        assert reply.status == 201 and "RateLimit" not in reply.headers


@pytest.mark.parametrize(
    "name",
    ["max_connections", "max_connections_per_user", "rate_limit_writes", "rate_limit_publish"],
)
def test_a_negative_limit_is_refused_by_name(name: str, clean_env: None) -> None:
    with pytest.raises(ConfigError, match=name.upper()):
        load_settings(**{name: -1})


def test_defaults(clean_env: None) -> None:
    settings = load_settings()
    assert (settings.max_connections, settings.max_connections_per_user) == (15_000, 20)
    assert (settings.rate_limit_writes, settings.rate_limit_publish) == (100, 1_000)
