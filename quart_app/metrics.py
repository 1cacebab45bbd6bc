"""The instance's metrics, exposed with prometheus-client in the Prometheus text format.

Each app has its own CollectorRegistry (tests build many apps in one process; the global
default registry would mix them). Most series are read from the live objects at scrape time
(`gauge`, `counter`), so the hot path pays nothing beyond the plain integer it already keeps;
the histograms are observed where the thing happens, once per request or per flush.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .engine.base import Event

# Delivery lag and flush duration: from a fraction of a millisecond (an idle instance) to
# seconds (a backlog); the request buckets reach the long-poll timeout (30 s).
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FLUSH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0)
# A request Quart could not route (a 404) is counted under this route, not under its raw
# path, so that scanners cannot grow the number of series.
UNMATCHED_ROUTE = "<unmatched>"

# Streams that got the raw socket ("fast") or fell back to Hypercorn's `send` ("fallback"),
# by transport ("sse", "ws"). Process-wide, since raw_socket.py decides without an app at hand;
# `rankpulse serve` runs one app per process, so it is the instance's count there.
STREAM_PATHS: Tally[tuple[str, str]] = Tally()
# GETs served by the fast lane (web/fast_lane.py), by path; process-wide, as STREAM_PATHS.
LANE_REQUESTS: Tally[str] = Tally()

Reading = Callable[[], float]
LabelledReading = Callable[[], Iterable[tuple[Sequence[str], float]]]


class _ReadAtScrape(Collector):
    """Series whose values live in the service's own objects, read when scraped."""

    def __init__(self) -> None:
        self._read: list[Callable[[], Metric]] = []

    def add(self, build: Callable[[], Metric]) -> None:
        self._read.append(build)

    def collect(self) -> Iterator[Metric]:
        for build in self._read:
            yield build()


class LoopHistogram:
    """A histogram for the event loop's hot path: plain counts, no lock (one thread writes),
    exposed at scrape time. prometheus-client's Histogram takes a lock and more per
    observation (3 us measured here, against about 1 us), which a per-event observation should
    not pay."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.help_text = help_text
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Metric:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        family = HistogramMetricFamily(self.name, self.help_text)
        family.add_metric([], cumulative, self.sum)
        return family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._scraped = _ReadAtScrape()
        self.registry.register(self._scraped)
        self.requests = Counter(
            "rankpulse_http_requests",
            "HTTP requests answered, by method and status",
            ["method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "rankpulse_http_request_duration_seconds",
            "time to answer an HTTP request (streams excluded), by route template and method",
            ["route", "method"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.delivery_lag = LoopHistogram(
            "rankpulse_delivery_lag_seconds",
            "time from an event's publication (its ts) to the socket write that carried it, "
            "once per event and flush",
            LAG_BUCKETS,
        )
        self.flush_seconds = LoopHistogram(
            "rankpulse_flush_duration_seconds",
            "time one write of pending events to all sockets took",
            FLUSH_BUCKETS,
        )
        self._scraped.add(self.delivery_lag.collect)
        self._scraped.add(self.flush_seconds.collect)
        self._request_children: dict[tuple[str | None, str, int], tuple[Counter, Histogram]] = {}

    def gauge(self, name: str, help_text: str, read: Reading) -> None:
        self._scraped.add(lambda: GaugeMetricFamily(name, help_text, value=read()))

    def counter(self, name: str, help_text: str, read: Reading) -> None:
        self._scraped.add(lambda: CounterMetricFamily(name, help_text, value=read()))

    def labelled_counter(
        self, name: str, help_text: str, labels: Sequence[str], read: LabelledReading
    ) -> None:
        def build() -> Metric:
            family = CounterMetricFamily(name, help_text, labels=labels)
            for values, value in read():
                family.add_metric(list(values), value)
            return family

        self._scraped.add(build)

    def observe_request(self, route: str | None, method: str, status: int, seconds: float) -> None:
        # The labelled children, looked up once per (route, method, status): `labels()` was
        # half of this call's cost, paid per long-poll (issue 9). Bounded: routes are templates.
        children = self._request_children.get((route, method, status))
        if children is None:
            children = self._request_children[route, method, status] = (
                self.requests.labels(method, str(status)),
                self.request_seconds.labels(route or UNMATCHED_ROUTE, method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_flush(self, written: Sequence[Event], seconds: float) -> None:
        """One flush of the hub: its duration, and the lag of each event it wrote."""
        self.flush_seconds.observe(seconds)
        if written:
            now_ms = time.time() * 1000
            lag = self.delivery_lag
            for event in written:
                ts = event_ts(event)
                if ts is not None:
                    lag.observe(max(0.0, now_ms - ts) / 1000)

    def render(self, extra: dict[str, float] | None = None) -> bytes:
        """The text exposition; `extra` adds gauges read by the caller (e.g. from SQL)."""
        text = generate_latest(self.registry)
        if extra:
            once = CollectorRegistry(auto_describe=False)
            collector = _ReadAtScrape()
            for name, value in extra.items():
                collector.add(_constant_gauge(name, value))
            once.register(collector)
            text += generate_latest(once)
        return text


def _constant_gauge(name: str, value: float) -> Callable[[], Metric]:
    return lambda: GaugeMetricFamily(name, name.replace("_", " "), value=value)


def event_ts(event: Event) -> int | None:
    """The `ts` of an event's envelope: always its last member (see base.envelope_json), so
    it is read from the tail of the text, without parsing the JSON."""
    text = event.text
    start = text.rfind(',"ts":')
    if start < 0 or not text.endswith("}"):
        return None
    digits = text[start + 6 : -1]
    return int(digits) if digits.isascii() and digits.isdigit() else None
