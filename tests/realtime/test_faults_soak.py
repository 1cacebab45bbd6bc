"""The soak command's short version in the suite: two instances on one Redis, 60 clients
dropping and resuming over random transports and instances while results flow at 10/s; every
client must see every event of its rooms exactly once, in the log's order, and every 2xx
result must be in the log once (the 10-minute, 1,000-client run is in docs/benchmarks/)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from quart_app.loadtest.soak import SoakOptions, run_soak, table

from ..services import LiveServer

SECRET = "soak-test-secret-0123456789-abcdefgh"

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
async def test_a_one_minute_soak_loses_nothing_and_reads_the_servers(
    redis_url: str, live_servers: Callable[..., LiveServer]
) -> None:
    env = {"REDIS_URL": redis_url, "JWT_SECRET": SECRET}
    servers = [live_servers(env=env), live_servers(env=env)]
    report = await run_soak(
        SoakOptions(
            urls=[s.url for s in servers],
            duration=50,
            clients=60,
            rate=10,
            session_seconds=(2.0, 10.0),
            jwt_secret=SECRET,
            pids=[s.process.pid for s in servers if s.process],
            ramp_seconds=5,
            drain_timeout=60,
            quiet=True,
        )
    )
    print(table(report))
    assert report["ok"], report
    clients = report["clients"]
    assert clients["ok"] == 60 and clients["events_checked"] > 10_000, clients
    # it really churned, on every transport
    assert set(clients["sessions"]) == {"sse", "ws", "poll"}, clients["sessions"]
    assert sum(clients["sessions"].values()) >= 100, clients["sessions"]
    # at 10/s for 50 s; a loaded machine (2 shared cores) answers fewer: correctness is the point
    assert report["writes"]["results_ok"] >= 50, report["writes"]
    for moment in ("start", "end"):
        for facts in report["servers"][moment]["processes"].values():
            assert facts["rss_kib"] and facts["open_fds"], facts
        for metrics in report["servers"][moment]["metrics"].values():
            assert "rankpulse_asyncio_tasks" in metrics, metrics
