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

from prometheus_client import CollectorRegistry, generate_latest
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


class _Tally:
    """One series of the request counter: its count and when it was first seen."""

    __slots__ = ("count", "created")

    def __init__(self) -> None:
        self.count = 0
        self.created = time.time()


class _Durations:
    """One series of the request histogram: counts per bucket (not cumulative), sum, created."""

    __slots__ = ("counts", "sum", "created")

    def __init__(self) -> None:
        self.counts = [0] * (len(REQUEST_BUCKETS) + 1)  # the last one: +Inf
        self.sum = 0.0
        self.created = time.time()


class RequestSeries(Collector):
    """rankpulse_http_requests (by method, status) and rankpulse_http_request_duration_seconds
    (by route, method) as plain counts, written at scrape time exactly as prometheus-client's
    Counter and Histogram write them (same samples, order, `_created` series). Their
    per-observation lock, child lookups and bucket loop were 4% of a long-poll's CPU under a
    crowd (issue 9); here an observation is a dict lookup, a bisect and three additions."""

    COUNTER = "rankpulse_http_requests"
    COUNTER_HELP = "HTTP requests answered, by method and status"
    HISTOGRAM = "rankpulse_http_request_duration_seconds"
    HISTOGRAM_HELP = (
        "time to answer an HTTP request (streams excluded), by route template and method"
    )

    def __init__(self) -> None:
        # In the order first seen (prometheus-client's children order).
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._durations: dict[tuple[str, str], _Durations] = {}
        # Both series of one (route, method, status), found with one lookup. Bounded: routes
        # are templates (UNMATCHED_ROUTE for a 404), methods and statuses few.
        self._series: dict[tuple[str | None, str, int], tuple[_Tally, _Durations]] = {}
        self._le = (*(repr(bound) for bound in REQUEST_BUCKETS), "+Inf")  # (as Histogram's)

    def observe(self, route: str | None, method: str, status: int, seconds: float) -> None:
        series = self._series.get((route, method, status))
        if series is None:
            series = self._series[route, method, status] = self._new(route, method, status)
        series[0].count += 1
        durations = series[1]
        # bisect_left: the first bound >= seconds, as Histogram's `seconds <= bound`.
        durations.counts[bisect_left(REQUEST_BUCKETS, seconds)] += 1
        durations.sum += seconds

    def _new(self, route: str | None, method: str, status: int) -> tuple[_Tally, _Durations]:
        tally = self._tallies.get((method, str(status)))
        if tally is None:
            tally = self._tallies[method, str(status)] = _Tally()
        key = (route or UNMATCHED_ROUTE, method)
        durations = self._durations.get(key)
        if durations is None:
            durations = self._durations[key] = _Durations()
        return tally, durations

    def collect(self) -> Iterator[Metric]:
        counter = Metric(self.COUNTER, self.COUNTER_HELP, "counter")
        for (method, status), tally in list(self._tallies.items()):
            labels = {"method": method, "status": status}
            counter.add_sample(self.COUNTER + "_total", labels, float(tally.count))
            counter.add_sample(self.COUNTER + "_created", labels, tally.created)
        yield counter
        histogram = Metric(self.HISTOGRAM, self.HISTOGRAM_HELP, "histogram")
        for (route, method), durations in list(self._durations.items()):
            labels = {"route": route, "method": method}
            running = 0
            for le, count in zip(self._le, list(durations.counts), strict=True):
                running += count
                histogram.add_sample(
                    self.HISTOGRAM + "_bucket", {**labels, "le": le}, float(running)
                )
            histogram.add_sample(self.HISTOGRAM + "_count", labels, float(running))
            histogram.add_sample(self.HISTOGRAM + "_sum", labels, durations.sum)
            histogram.add_sample(self.HISTOGRAM + "_created", labels, durations.created)
        yield histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._scraped = _ReadAtScrape()
        self.registry.register(self._scraped)
        self.requests = RequestSeries()
        self.registry.register(self.requests)
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
        self.requests.observe(route, method, status, seconds)

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
