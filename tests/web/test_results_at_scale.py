"""A result's time does not grow with the number of players (issue 8): with 100,000 players
seeded in bulk, the median of 20 results stays within a budget that an O(n) step on the
write path (a count over the players table, as ranks once were) does not meet, while a loaded
2-core machine does. And the ranks those results carry are still exact."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import sqlalchemy as sa
from quart import Quart

from quart_app.engine.base import Event
from quart_app.store.rebuild import rebuild
from quart_app.store.seed import seed_players, seeded_id
from quart_app.store.tables import players

from ..helpers import serving

PLAYERS = 100_000
RESULTS = 20
# CPU time of this process per result (the request, the SQL thread, the engine), not wall
# time: on this shared machine a commit's fsync wait varies 2x from run to run, CPU much less.
# Measured side by side at 100,000 players: about 12-14 ms after issue 8 (mostly the test
# client and SQLAlchemy), about 40 ms with the two full-table counts it replaced.
BUDGET_CPU_P50_MS = 25.0


async def test_result_time_is_bounded_with_100k_players(
    make_app: Callable[..., Quart],
) -> None:
    async with serving(make_app()) as api:
        seeded = time.perf_counter()
        await seed_players(api.rt.store, PLAYERS)
        assert await rebuild(api.rt.store, api.rt.engine, api.rt.relay) == PLAYERS
        print(f"seeded and loaded {PLAYERS} players in {time.perf_counter() - seeded:.1f} s")
        events: list[Event] = []
        api.rt.engine.listen(events.extend)

        pairs = [(seeded_id("s", 3 * i), seeded_id("s", 3 * i + 50_000)) for i in range(RESULTS)]
        for i, (a, b) in enumerate(pairs):
            await api.create(f"scale{i}", a, b)
        wall, cpu = [], []
        for i, (a, _) in enumerate(pairs):
            started, cpu_started = time.perf_counter(), time.process_time()
            await api.result(f"scale{i}", a)
            wall.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - cpu_started) * 1000)
        p50 = statistics.median(cpu)
        print(f"result p50: CPU {p50:.1f} ms, wall {statistics.median(wall):.1f} ms")
        assert p50 <= BUDGET_CPU_P50_MS, f"result CPU p50 {p50:.1f} ms > {BUDGET_CPU_P50_MS} ms"

        # The last result's winner: the rank its event carries is its rank in SQL.
        winner = pairs[-1][0]
        row = await api.rt.store.db.fetch_one(
            sa.select(players).where(players.c.player_id == winner)
        )
        assert row is not None
        ahead = await api.rt.store.db.fetch_val(
            sa.select(sa.func.count())
            .select_from(players)
            .where(
                sa.or_(
                    players.c.rating > row.rating,
                    sa.and_(players.c.rating == row.rating, players.c.player_id < winner),
                )
            )
        )
        ranks = [
            json.loads(e.text)["data"]["rank"]
            for e in events
            if e.name == "leaderboard:player_rank" and e.rooms == (f"player:{winner}",)
        ]
        assert ranks[-1] == ahead + 1
