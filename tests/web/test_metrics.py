"""/metrics: Prometheus' own parser reads it, numbers keep every digit, requests are timed by
route template (bounded series), and the read-at-scrape series keep their names."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ..helpers import Api


async def scrape(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = await api.get("/metrics", token=None)
    assert reply.status == 200
    assert reply.content_type == "text/plain"
    text = reply.body.decode() if isinstance(reply.body, bytes) else reply.body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_parse_and_large_counters_keep_every_digit(memory_api: Api) -> None:
    memory_api.rt.hub.events = 123_456_789  # as after a long uptime
    memory_api.rt.hub.deliveries = 12_345_678
    samples = await scrape(memory_api)
    # the hand-written format printed {:g}: 1.23457e+08, i.e. 123457000
    assert samples["rankpulse_events_total", ()] == 123_456_789
    assert samples["rankpulse_deliveries_total", ()] == 12_345_678
    for name in (
        "rankpulse_connections",
        "rankpulse_rooms",
        "rankpulse_log_head",
        "rankpulse_slow_disconnects_total",
        "rankpulse_last_flush_seconds",
        "rankpulse_outbox_pending",
        "rankpulse_outbox_publish_failures_total",
    ):
        assert (name, ()) in samples, name


async def test_conflation_and_window_work_is_exported(memory_api: Api) -> None:
    hub = memory_api.rt.hub
    hub.conflated, hub.windows.reads, hub.windows.sent = 3, 40, 41
    samples = await scrape(memory_api)
    assert samples["rankpulse_conflated_snapshots_total", ()] == 3
    assert samples["rankpulse_window_reads_total", ()] == 40
    assert samples["rankpulse_windows_sent_total", ()] == 41


async def test_requests_are_counted_and_timed_by_route_template(memory_api: Api) -> None:
    await memory_api.create("m1", "a", "b")
    for match_id in ("m1", "m2", "m3"):  # three raw paths, one route
        await memory_api.get(f"/api/matches/{match_id}")
    await memory_api.get("/no/such/path/at/all")
    samples = await scrape(memory_api)
    route = (("method", "GET"), ("route", "/api/matches/<match_id>"))
    assert samples["rankpulse_http_request_duration_seconds_count", route] == 3
    assert samples["rankpulse_http_request_duration_seconds_sum", route] > 0
    unmatched = (("method", "GET"), ("route", "<unmatched>"))
    assert samples["rankpulse_http_request_duration_seconds_count", unmatched] == 1
    routes = {
        dict(labels)["route"]
        for (name, labels) in samples
        if name == "rankpulse_http_request_duration_seconds_count"
    }
    assert not any("m2" in route or "/no/such" in route for route in routes), routes
    assert samples["rankpulse_http_requests_total", (("method", "GET"), ("status", "200"))] == 1
    assert samples["rankpulse_http_requests_total", (("method", "GET"), ("status", "404"))] == 3
    assert samples["rankpulse_http_requests_total", (("method", "POST"), ("status", "201"))] == 1


async def test_two_apps_in_one_process_do_not_share_series(memory_api: Api) -> None:
    """Each app has its own registry (the default global one would mix instances)."""
    from quart_app.metrics import Metrics

    other = Metrics()
    for _ in range(5):
        other.observe_request("/api/poll", "GET", 200, 0.01)
    samples = await scrape(memory_api)
    assert ("rankpulse_http_requests_total", (("method", "GET"), ("status", "200"))) not in (
        samples
    )
