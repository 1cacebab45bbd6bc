"""Automatic rebuilds on a shared Redis do not supersede each other.

Every instance that finds no complete board rebuilds it from SQL (at start, and after Redis
lost its data). A rebuild begun while another runs used to take over, and the first one
failed: at 1,000,000 players (20 s a rebuild) instances starting together kept throwing each
other's work away for minutes. Now an automatic rebuild waits for the one in flight and only
`rankpulse rebuild` (an operator's request) takes over; a rebuilder that died stops holding
the others back when its marker expires."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from quart_app import runtime as runtime_module
from quart_app.engine.base import Engine
from quart_app.store import rebuild as rebuild_module
from quart_app.store.database import Store

from ..helpers import eventually, seed_sqlite, serving

PLAYERS = 3000


async def rebuilt_markers(engine: Engine) -> int:
    count, seq = 0, 0
    while batch := await engine.read_after(seq, 500):
        count += sum(1 for e in batch if json.loads(e.text)["event"] == "board:rebuilt")
        seq = batch[-1].seq
    return count


async def test_an_instance_starting_during_another_ones_rebuild_waits_instead_of_superseding(
    make_app: Callable[..., Quart],
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await seed_sqlite(f"sqlite:///{tmp_path}/pulse.db", PLAYERS)  # the file make_app serves
    # start() returns after this wait while the start-up rebuild goes on
    monkeypatch.setattr(runtime_module, "DATABASE_FIRST_ATTEMPT_WAIT", 0.2)

    gate, snapshots = asyncio.Event(), []
    read = rebuild_module._snapshot

    async def held_snapshot(store: Store) -> Any:
        snapshots.append(store)
        rows = await read(store)
        await gate.wait()
        return rows

    monkeypatch.setattr(rebuild_module, "_snapshot", held_snapshot)
    attempts: list[tuple[Engine, int | None]] = []

    async def recorded_rebuild(*args: Any, **kwargs: Any) -> int | None:
        count: int | None = await rebuild_module.rebuild(*args, **kwargs)
        attempts.append((args[1], count))
        return count

    monkeypatch.setattr(runtime_module, "rebuild", recorded_rebuild)

    async with serving(make_app(redis_url=redis_url), settled=False) as a:
        await eventually(lambda: _true(len(snapshots) == 1), 10, "A's rebuild reading SQL")
        app_b = make_app(redis_url=redis_url)
        async with serving(app_b, settled=False) as b:
            # B finds no complete board; it either waits (attempts a rebuild that declines)
            # or, the bug, starts its own, which reads SQL a second time
            await eventually(
                lambda: _true(len(snapshots) > 1 or any(e is b.rt.engine for e, _ in attempts)),
                10,
                "B's decision about the board",
            )
            assert len(snapshots) == 1, "B started a second rebuild while A's was running"
            gate.set()
            await eventually(
                lambda: _true(b.rt._database_up is not None and b.rt._database_up.done()),
                20,
                "B's start-up",
            )
            for api in (a, b):
                page = (await api.get("/api/leaderboard?limit=1")).body
                assert page["total"] == PLAYERS
            assert len(snapshots) == 1
            assert [count for e, count in attempts if e is a.rt.engine] == [PLAYERS]
            assert await rebuilt_markers(a.rt.engine) == 1


async def _true(value: bool) -> bool:
    return value
