"""Process-local counters and gauges, rendered in the Prometheus text format."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

_counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
_gauges: dict[str, Callable[[], float]] = {}
_help: dict[str, str] = {}


def inc(name: str, amount: float = 1, **labels: str) -> None:
    _counters[(name, tuple(sorted(labels.items())))] += amount


def gauge(name: str, help_text: str, read: Callable[[], float]) -> None:
    _gauges[name] = read
    _help[name] = help_text


def describe(name: str, help_text: str) -> None:
    _help[name] = help_text


def render() -> str:
    lines: list[str] = []
    seen: set[str] = set()
    for (name, labels), value in sorted(_counters.items()):
        if name not in seen:
            seen.add(name)
            lines += [f"# HELP {name} {_help.get(name, name)}", f"# TYPE {name} counter"]
        label_text = ",".join(f'{k}="{v}"' for k, v in labels)
        lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
    for name, read in sorted(_gauges.items()):
        lines += [f"# HELP {name} {_help[name]}", f"# TYPE {name} gauge", f"{name} {read():g}"]
    return "\n".join(lines) + "\n"
