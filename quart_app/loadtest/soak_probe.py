"""What the soak reads about the servers: from /proc when it is given their pids (RSS, open
file descriptors, threads of each process tree), and from /metrics what every instance
exports (connections, asyncio tasks, log head, outbox backlog...), at the start and the end."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx

from .sysinfo import process_tree, rss_kib

IDLE_TASKS_MARGIN = 5  # tasks above the start's that still count as idle

# The unlabelled series of /metrics worth comparing between the start and the end of a soak.
METRICS = (
    "rankpulse_connections",
    "rankpulse_asyncio_tasks",
    "rankpulse_rooms",
    "rankpulse_log_head",
    "rankpulse_events_total",
    "rankpulse_deliveries_total",
    "rankpulse_slow_disconnects_total",
    "rankpulse_outbox_pending",
    "rankpulse_outbox_publish_failures_total",
)


def _count(path: str) -> int | None:
    try:
        return len(os.listdir(path))
    except OSError:
        return None


def process_facts(pid: int) -> dict[str, Any]:
    """RSS (KiB), open fds and threads summed over `pid` and its descendants."""
    tree = process_tree(pid)
    rss = [rss_kib(p) for p in tree]
    fds = [_count(f"/proc/{p}/fd") for p in tree]
    threads = [_count(f"/proc/{p}/task") for p in tree]
    return {
        "processes": len(tree),
        "rss_kib": sum(v for v in rss if v is not None) if any(rss) else None,
        "open_fds": sum(v for v in fds if v is not None) if any(fds) else None,
        "threads": sum(v for v in threads if v is not None) if any(threads) else None,
    }


def parse_metrics(text: str) -> dict[str, float]:
    """The unlabelled samples of METRICS from a Prometheus text exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" in line:
            continue
        name, _, value = line.partition(" ")
        if name in METRICS:
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


async def metrics_of(client: httpx.AsyncClient, url: str) -> dict[str, float] | str:
    try:
        response = await client.get(url + "/metrics", timeout=10)
    except httpx.HTTPError as exc:
        return f"unreachable: {exc!r}"
    if response.status_code != 200:
        return f"/metrics answered {response.status_code}"
    return parse_metrics(response.text)


async def snapshot(urls: list[str], pids: list[int]) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        metrics = {url: await metrics_of(client, url) for url in urls}
    return {"processes": {str(pid): process_facts(pid) for pid in pids}, "metrics": metrics}


async def settle(urls: list[str], start: dict[str, Any], timeout: float) -> float:
    """Wait (up to `timeout` s) until every instance is back to its idle level: no more
    connections than at the start, and asyncio tasks within a few of the start's (a handler
    finishing late on a loaded machine is not a leak; what stays after `timeout` may be).
    Returns how long that took."""
    began = time.monotonic()

    def idle(url: str, now: dict[str, float] | str) -> bool:
        before = start.get(url)
        if not isinstance(now, dict) or not isinstance(before, dict):
            return False
        connections = now.get("rankpulse_connections", 0.0)
        tasks = now.get("rankpulse_asyncio_tasks", 0.0)
        idle_connections: float = before.get("rankpulse_connections", 0.0)
        idle_tasks: float = before.get("rankpulse_asyncio_tasks", tasks)
        return connections <= idle_connections and tasks <= idle_tasks + IDLE_TASKS_MARGIN

    async with httpx.AsyncClient() as client:
        while time.monotonic() - began < timeout:
            now = {url: await metrics_of(client, url) for url in urls}
            if all(idle(url, metrics) for url, metrics in now.items()):
                break
            await asyncio.sleep(0.5)  # the servers notice dropped peers on their own time
    return round(time.monotonic() - began, 1)
