"""What the generator reads about processes: RSS and CPU time from /proc, CPU pinning,
the open-file limit. Linux only where /proc is needed; elsewhere it reports nothing."""

from __future__ import annotations

import os
import resource
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_cpu_list(text: str) -> set[int]:
    """`taskset -c` syntax: "1", "0,2", "1-3", "0-1,4"."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        if sep:
            if not (low.isdigit() and high.isdigit()) or int(low) > int(high):
                raise ValueError(f"bad CPU range {part!r}")
            cpus.update(range(int(low), int(high) + 1))
        elif part.isdigit():
            cpus.add(int(part))
        else:
            raise ValueError(f"bad CPU number {part!r}")
    if not cpus:
        raise ValueError("empty CPU list")
    return cpus


def pin(cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)


def raise_nofile() -> int:
    """Raise the soft open-file limit to the hard one; return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds() -> float:
    """This process's own CPU time, user + system."""
    times = os.times()
    return times.user + times.system


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.extend(int(child) for child in task.read_text().split())
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants: with the Hypercorn CLI the app runs in a child process
    (even with one worker), so the tree is what holds the connections."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children(current))
    return tree


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of `pid`, in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


class ServerProbe:
    """RSS and CPU of the server processes given by pid (each with its descendants)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def rss(self) -> dict[int, int] | None:
        """VmRSS in KiB per process of every tree; None when nothing could be read."""
        if not self.pids:
            return None
        out: dict[int, int] = {}
        for root in self.pids:
            for pid in process_tree(root):
                value = rss_kib(pid)
                if value is not None:
                    out[pid] = value
        return out or None

    def cpu_seconds(self) -> dict[int, float] | None:
        """CPU time (user + system, seconds) of each tree, by its root pid."""
        out: dict[int, float] = {}
        for root in self.pids:
            ticks = [cpu_ticks(pid) for pid in process_tree(root)]
            known = [t for t in ticks if t is not None]
            if known:
                out[root] = sum(known) / CLOCK_TICKS
        return out or None
