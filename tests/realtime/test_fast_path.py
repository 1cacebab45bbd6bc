"""The fast socket path, checked on a real `rankpulse serve`: raw_socket.py relies on Hypercorn
internals, and losing it would only make streams about 20x slower, every other test green.
This test fails instead. It also checks that the delivery histograms fill up with traffic."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..clients import HttpApi, SSEClient, WSClient
from ..services import LiveServer


async def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(base_url=base_url) as client:
        text = (await client.get("/metrics")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_sse_and_websocket_streams_are_on_the_fast_path(live_server: LiveServer) -> None:
    admin = HttpApi(live_server.url, live_server.token("ops", "admin"))
    token = live_server.token("viewer")
    async with (
        SSEClient(live_server.url, "matches", token) as sse,
        WSClient(live_server.url, token) as ws,
    ):
        assert (await ws.subscribe(["matches"]))["type"] == "subscribed"
        await admin.announce("matches", {"n": 1})
        await sse.wait_event("announcement", timeout=10)
        await ws.wait_for(lambda events: any(e["event"] == "announcement" for e in events), 10)
        samples = await scrape(live_server.url)

    for transport in ("sse", "ws"):
        label = (("transport", transport),)
        assert samples["rankpulse_stream_fallback_path_total", label] == 0, transport
        assert samples["rankpulse_stream_fast_path_total", label] >= 1, transport
    # the announcement went out through the hub's flush: both histograms have samples
    assert samples["rankpulse_flush_duration_seconds_count", ()] >= 1
    assert samples["rankpulse_delivery_lag_seconds_count", ()] >= 1
    lag = (
        samples["rankpulse_delivery_lag_seconds_sum", ()]
        / samples["rankpulse_delivery_lag_seconds_count", ()]
    )
    assert 0 <= lag < 10  # (seconds: a clock or unit mistake would show as 1000x)
