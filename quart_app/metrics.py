"""The instance's metrics in the Prometheus text format: read from the live objects at scrape
time, so nothing on the hot path pays for them beyond a counter increment."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable


class Metrics:
    def __init__(self) -> None:
        self._series: list[tuple[str, str, str, Callable[[], float]]] = []
        self.requests: Counter[tuple[str, int]] = Counter()

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self._series.append((name, "gauge", help_text, read))

    def counter(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self._series.append((name, "counter", help_text, read))

    def render(self, extra: dict[str, float] | None = None) -> str:
        lines: list[str] = []
        for name, kind, help_text, read in self._series:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {read():g}"]
        for name, value in (extra or {}).items():
            lines += [f"# TYPE {name} gauge", f"{name} {value:g}"]
        lines += [
            "# HELP rankpulse_http_requests_total HTTP requests answered, by method and status",
            "# TYPE rankpulse_http_requests_total counter",
        ]
        for (method, status), count in sorted(self.requests.items()):
            lines.append(
                f'rankpulse_http_requests_total{{method="{method}",status="{status}"}} {count}'
            )
        return "\n".join(lines) + "\n"
