"""The request series of /metrics (rankpulse_http_requests, rankpulse_http_request_duration_seconds)
are written exactly as prometheus-client's own Counter and Histogram write them, whatever was
observed: the same families, series, order, bucket edges and numbers (issue 9 made the
per-request observation plain counts read at scrape time; a dashboard must not notice)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from quart_app.metrics import REQUEST_BUCKETS, UNMATCHED_ROUTE, Metrics

ROUTES = st.sampled_from([None, "/api/poll", "/api/results", "/api/players/<player_id>"])
METHODS = st.sampled_from(["GET", "POST", "DELETE"])
STATUSES = st.sampled_from([200, 201, 400, 404, 503])
# Exactly on a bucket edge, between edges, above the last one.
SECONDS = st.one_of(
    st.sampled_from(REQUEST_BUCKETS),
    st.floats(min_value=0, max_value=40, allow_nan=False),
)
OBSERVATIONS = st.lists(st.tuples(ROUTES, METHODS, STATUSES, SECONDS), max_size=40)
# When a series was first seen: a time of day, not the same twice.
CREATED = re.compile(rb"^(\S+_created\{[^}]*\}) \S+$", re.M)


def reference(observations: list[tuple[str | None, str, int, float]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    requests = Counter(
        "rankpulse_http_requests",
        "HTTP requests answered, by method and status",
        ["method", "status"],
        registry=registry,
    )
    seconds = Histogram(
        "rankpulse_http_request_duration_seconds",
        "time to answer an HTTP request (streams excluded), by route template and method",
        ["route", "method"],
        buckets=REQUEST_BUCKETS,
        registry=registry,
    )
    for route, method, status, duration in observations:
        requests.labels(method, str(status)).inc()
        seconds.labels(route or UNMATCHED_ROUTE, method).observe(duration)
    return generate_latest(registry)


def request_part(text: bytes) -> bytes:
    start = text.find(b"# HELP rankpulse_http_requests_total ")
    return CREATED.sub(rb"\1 <created>", text[start:] if start >= 0 else b"")


@settings(max_examples=200, deadline=None)
@given(OBSERVATIONS)
def test_request_series_read_as_prometheus_clients_own(
    observations: list[tuple[str | None, str, int, float]],
) -> None:
    metrics = Metrics()
    for route, method, status, duration in observations:
        metrics.observe_request(route, method, status, duration)
    assert request_part(metrics.render()) == request_part(reference(observations))


def test_a_series_created_time_is_when_it_was_first_observed() -> None:
    metrics = Metrics()
    metrics.observe_request("/api/poll", "GET", 200, 0.01)
    text = metrics.render()
    created = re.search(
        rb'^rankpulse_http_requests_created\{method="GET",status="200"\} (\S+)$', text, re.M
    )
    assert created is not None and float(created.group(1)) > 1.6e9
