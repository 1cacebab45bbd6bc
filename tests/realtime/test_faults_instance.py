"""An instance crashes (kill -9 of its whole process group) under load: its clients resume on
the other instance with their cursor, with no gap and no duplicate; its presence disappears
within 15 s (PROTOCOL 4: the connections of a crashed instance leave within 15 s)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from ..clients import SSEClient, WSClient
from ..fault_checks import assert_nothing_lost, results_grow
from ..fault_traffic import Traffic
from ..helpers import eventually
from ..services import LiveServer

SECRET = "fault-suite-secret-0123456789-abcdef"
PRESENCE_GONE_SECONDS = 15.0

pytestmark = pytest.mark.slow


async def online_count(server: LiveServer, token: str) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(
            server.url + "/api/presence", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200, response.text
    return int(response.json()["online_count"])


async def test_an_instance_killed_under_load_its_clients_resume_on_the_other(
    redis_url: str, live_servers: Callable[..., LiveServer]
) -> None:
    env = {"REDIS_URL": redis_url, "JWT_SECRET": SECRET}
    survivor, victim = live_servers(env=env), live_servers(env=env)
    servers = [survivor, victim]
    checker = survivor.token("checker")
    async with Traffic(servers) as traffic:
        # Streams of subjects that are on the victim only and will not come back: what the
        # presence count must lose. (The traffic's watchers move over and stay online.)
        ghost_sse = SSEClient(victim.url, "presence", victim.token("ghost-sse"))
        ghost_ws = WSClient(victim.url, victim.token("ghost-ws"))
        await ghost_sse.__aenter__()
        await ghost_ws.__aenter__()
        try:
            assert (await ghost_ws.subscribe(["presence"]))["type"] == "subscribed"
            await results_grow(traffic, 15, 30, "results before the crash")

            async def everyone_online() -> bool:
                # watchers' subjects + the writer's (it long-polls the reference) + 2 ghosts
                return await online_count(survivor, checker) == len(traffic.watchers) + 3

            await eventually(everyone_online, 15, "everyone counted online")
            before = await online_count(survivor, checker)
            on_victim = [w for w in traffic.watchers if w.instance == 1]
            traffic.down.add(1)  # from now on nobody connects there
            victim.kill()
            crashed = time.monotonic()

            async def ghosts_gone() -> bool:
                return await online_count(survivor, checker) == before - 2

            gone = await eventually(ghosts_gone, PRESENCE_GONE_SECONDS, "the ghosts offline")
            await results_grow(traffic, 15, 30, "results on the survivor")
            traffic.stop_writing()
            facts = await assert_nothing_lost(traffic, [survivor], survivor.env["DATABASE_URL"])
        finally:
            await ghost_sse.close()
            await ghost_ws.drop()
    # The clients that were on the victim really lost their connection and resumed.
    assert {w.transport for w in on_victim} == {"sse", "ws", "poll"}, on_victim
    for watcher in on_victim:
        assert sum(watcher.check.sessions.values()) >= 1, watcher.check.summary()
    print(
        f"presence of the crashed instance gone after {gone:.1f}s; "
        f"{time.monotonic() - crashed:.1f}s from crash to verified; {facts}"
    )
