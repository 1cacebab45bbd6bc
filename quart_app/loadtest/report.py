"""The load test's report: one JSON-able dict, and the table printed from it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .publisher import PublishResult
from .tracker import summarize

if TYPE_CHECKING:
    from .runner import Options

KINDS = ("sse", "poll", "ws")
BOTTLENECK_PERCENT = 90.0


def connected_summary(answers: list[dict[str, Any]]) -> str:
    connected: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for answer in answers:
        connected.update(answer["connected"])
        for kind, reasons in answer["failures"].items():
            failed[kind] += sum(reasons.values())
    parts = [
        f"{kind} {connected[kind]}" + (f" ({failed[kind]} failed)" if failed[kind] else "")
        for kind in KINDS
        if connected[kind] or failed[kind]
    ]
    return ", ".join(parts) or "nothing"


def _ms(values_ns: list[int]) -> list[float]:
    return [value / 1e6 for value in values_ns]


def _rss_total(rss: dict[int, int] | None) -> int | None:
    return sum(rss.values()) if rss else None


def build(options: Options, facts: dict[str, Any]) -> dict[str, Any]:
    publish: PublishResult = facts["publish"]
    connected_answers: list[dict[str, Any]] = facts["connected"]
    results: list[dict[str, Any]] = facts.get("results", [])
    accepted_events = publish.accepted
    transports: dict[str, Any] = {}
    problems: list[str] = []
    warnings: list[str] = []
    total_connected = 0
    total_delivered = 0
    last_ns = 0
    for kind in KINDS:
        requested = getattr(options, kind)
        if not requested:
            continue
        connected = sum(a["connected"][kind] for a in connected_answers)
        failures: Counter[str] = Counter()
        retries: Counter[str] = Counter()
        times: list[float] = []
        for answer in connected_answers:
            failures.update(answer["failures"][kind])
            retries.update(answer["retries"][kind])
            times.extend(answer["connect_times"][kind])
        total_connected += connected
        row: dict[str, Any] = {
            "requested": requested,
            "connected": connected,
            "connect_failures": dict(failures),
            "connect_retries": dict(retries),
            "connect_ms": summarize([t * 1000 for t in times]),
        }
        if retries:
            warnings.append(
                f"{kind}: {sum(retries.values())} connects failed and were retried "
                f"({dict(retries)}): a full listen queue (Hypercorn's backlog "
                "defaults to 100) does this when more connects are in flight"
            )
        if failures:
            problems.append(
                f"{kind}: {sum(failures.values())} of {requested} did not connect "
                f"({dict(failures)})"
            )
        if "after_hold" in facts:
            held = sum(a["held"].get(kind, 0) for a in facts["after_hold"])
            row["held_after_hold"] = held
            if held < connected:
                problems.append(f"{kind}: {connected - held} connections lost during the hold")
        if "final_status" in facts:
            row["held_end"] = sum(a["held"].get(kind, 0) for a in facts["final_status"])
        if results:
            rows = [r["kinds"][kind] for r in results]
            delivered = sum(r["delivered"] for r in rows)
            total_delivered += delivered
            kind_last = max(r["last_ns"] for r in rows)
            last_ns = max(last_ns, kind_last)
            samples: list[int] = []
            for r in rows:
                samples.extend(r["samples"])
            latency = summarize(_ms(samples))
            latency["max"] = max(r["max_latency_ns"] for r in rows) / 1e6 if delivered else None
            latency["sampled_every_nth_event"] = facts["sample_every"][kind]
            worst = max(
                (r["worst"] for r in rows if r["worst"]), default=None, key=lambda w: w["badness"]
            )
            ended: Counter[str] = Counter()
            resets: Counter[str] = Counter()
            for r in rows:
                ended.update(r["ended"])
                resets.update(r["resets"])
            span = (kind_last - publish.first_ns) / 1e9 if kind_last and publish.first_ns else 0
            row.update(
                {
                    "held_end": sum(r["held"] for r in rows),
                    "expected": connected * accepted_events,
                    "delivered": delivered,
                    "deliveries_per_s": delivered / span if span > 0 else None,
                    "latency_ms": latency,
                    "missing": sum(r["missing"] for r in rows),
                    "duplicated": sum(r["duplicated"] for r in rows),
                    "out_of_order": sum(r["out_of_order"] for r in rows),
                    "unexpected": sum(r["unexpected"] for r in rows),
                    "clients_missing": sum(r["clients_missing"] for r in rows),
                    "clients_duplicated": sum(r["clients_duplicated"] for r in rows),
                    "clients_out_of_order": sum(r["clients_out_of_order"] for r in rows),
                    "worst_client": worst and {k: v for k, v in worst.items() if k != "badness"},
                    "ended": dict(ended),
                    "resets": dict(resets),
                    "foreign_announcements": sum(r["other"] for r in rows),
                    "protocol_errors": sum(r["protocol_errors"] for r in rows),
                }
            )
            for name in ("missing", "duplicated", "out_of_order", "unexpected"):
                if row[name]:
                    problems.append(
                        f"{kind}: {row[name]} events {name.replace('_', ' ')} over "
                        f"{row['clients_' + name] if 'clients_' + name in row else '?'}"
                        f" clients (worst: {row['worst_client']})"
                    )
            if ended:
                problems.append(
                    f"{kind}: {sum(ended.values())} connections ended during the "
                    f"run ({dict(ended)})"
                )
            if row["protocol_errors"]:
                problems.append(f"{kind}: {row['protocol_errors']} protocol errors")
        transports[kind] = row

    # publishing -------------------------------------------------------------------------
    # From the first request written to the last answer read: with a pipelined window the
    # writes alone would run far ahead of what the server accepts.
    publish_span = (publish.done_ns - publish.first_ns) / 1e9 if publish.accepted else 0
    publish_row: dict[str, Any] = {
        "planned": options.planned_events,
        "mode": "burst" if options.burst is not None else ("rate" if options.rate else "none"),
        "rate_target": options.rate if options.burst is None else None,
        "attempted": publish.attempted,
        "accepted": publish.accepted,
        "failed": len(publish.failed),
        "statuses": dict(publish.statuses),
        "first_error": publish.first_error,
        "rate_achieved": publish.accepted / publish_span if publish_span > 0 else None,
        "answer_ms": summarize(_ms(publish.latencies_ns)),
        "publishers": options.publishers,
        "window": options.window,
    }
    if publish.failed:
        problems.append(
            f"publish: {len(publish.failed)} of {publish.attempted} refused ({publish.first_error})"
        )
    if options.planned_events and publish.attempted < options.planned_events:
        problems.append(
            f"publish: only {publish.attempted} of {options.planned_events} sent "
            "before the deadline"
        )
    if (
        options.rate
        and options.burst is None
        and publish_row["rate_achieved"]
        and publish_row["rate_achieved"] < 0.95 * options.rate
    ):
        warnings.append(
            f"the publisher reached {publish_row['rate_achieved']:.1f}/s of the "
            f"{options.rate:g}/s asked: the server answered publishes too slowly"
        )

    deliveries: dict[str, Any] = {}
    if results:
        span = (last_ns - publish.first_ns) / 1e9 if last_ns and publish.first_ns else 0
        deliveries = {
            "expected": total_connected * accepted_events,
            "delivered": total_delivered,
            "first_publish_to_last_delivery_s": span,
            "per_s": total_delivered / span if span > 0 else None,
        }

    # server --------------------------------------------------------------------------------
    server: dict[str, Any] = {"pids": options.server_pids}
    before, connected_rss = (
        _rss_total(facts.get("rss_before")),
        _rss_total(facts.get("rss_connected")),
    )
    if before is not None and connected_rss is not None:
        server.update(
            {
                "rss_kib_before": before,
                "rss_kib_connected": connected_rss,
                "rss_kib_after_hold": _rss_total(facts.get("rss_after_hold")),
                "rss_kib_end": _rss_total(facts.get("rss_end")),
                "rss_growth_kib": connected_rss - before,
                "rss_per_connection_kib": (connected_rss - before) / total_connected
                if total_connected
                else None,
                "rss_by_pid_connected": facts.get("rss_connected"),
            }
        )
    elif options.server_pids:
        warnings.append("could not read the server's RSS from /proc (another machine?)")
    if facts.get("server_cpu"):
        server["cpu_percent_during_delivery"] = facts["server_cpu"]

    # the generator itself ----------------------------------------------------------------
    generator: dict[str, Any] = {"processes": [], "nofile": facts.get("nofile")}
    bottleneck = False
    for index, answer in enumerate(connected_answers):
        entry: dict[str, Any] = {
            "worker": index,
            "pid": facts["workers"][index]["pid"],
            "cpu_percent_connect": answer["cpu"]["cpu_percent"],
        }
        if results:
            entry["cpu_percent_delivery"] = results[index]["cpu"]["cpu_percent"]
            if entry["cpu_percent_delivery"] > BOTTLENECK_PERCENT:
                bottleneck = True
                warnings.append(
                    f"generator process {index} used {entry['cpu_percent_delivery']:.0f}% of a "
                    "core while events flowed: THE GENERATOR WAS THE BOTTLENECK; deliveries/s "
                    "is a lower bound and latency an upper bound. Use more --processes on "
                    "more --cpu."
                )
        if entry["cpu_percent_connect"] > BOTTLENECK_PERCENT:
            warnings.append(
                f"generator process {index} used "
                f"{entry['cpu_percent_connect']:.0f}% of a core while connecting: "
                "connect times are an upper bound"
            )
        generator["processes"].append(entry)
    if "publisher_cpu" in facts:
        cpu = facts["publisher_cpu"]
        percent = 100 * cpu["cpu_s"] / cpu["wall_s"] if cpu["wall_s"] > 0 else 0.0
        generator["publisher_cpu_percent"] = percent
        if percent > BOTTLENECK_PERCENT:
            bottleneck = True
            warnings.append(
                f"the publisher (coordinator process) used {percent:.0f}% of a core: "
                "it was the bottleneck of the publish rate, a lower bound"
            )
    if options.cpus and results:
        total_percent = sum(p.get("cpu_percent_delivery", 0) for p in generator["processes"])
        total_percent += generator.get("publisher_cpu_percent", 0)
        if total_percent > BOTTLENECK_PERCENT * len(options.cpus) and not bottleneck:
            bottleneck = True
            warnings.append(
                f"the generator used {total_percent:.0f}% of its {len(options.cpus)} "
                "pinned CPU(s): it was the bottleneck; figures are bounds"
            )
    generator["bottleneck"] = bottleneck
    generator["cpus"] = sorted(options.cpus) if options.cpus else None

    return {
        "label": options.label,
        "run": facts["run"],
        "room": facts["room"],
        "urls": facts["urls"],
        "publish_url": facts["publish_url"],
        "processes": facts["processes"],
        "connect_wall_s": facts["connect_wall_s"],
        "transports": transports,
        "publish": publish_row,
        "deliveries": deliveries,
        "server": server,
        "generator": generator,
        "warnings": warnings,
        "problems": problems,
        "ok": not problems,
    }


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(out: dict[str, Any]) -> str:
    lines = [f"load test {out['run']}  room {out['room']}  -> {', '.join(out['urls'])}"]
    header = (
        "transport",
        "connected",
        "connect p50/p99 ms",
        "delivered",
        "deliv/s",
        "latency p50/p99/max ms",
        "missing",
        "dup",
        "order",
        "ended",
    )
    rows = [header]
    for kind, row in out["transports"].items():
        lat = row.get("latency_ms", {})
        rows.append(
            (
                kind,
                f"{row['connected']:,}/{row['requested']:,}",
                f"{_fmt(row['connect_ms']['p50'])}/{_fmt(row['connect_ms']['p99'])}",
                f"{_fmt(row.get('delivered'))}/{_fmt(row.get('expected'))}"
                if "delivered" in row
                else "-",
                _fmt(row.get("deliveries_per_s"), 0),
                f"{_fmt(lat.get('p50'), 2)}/{_fmt(lat.get('p99'), 2)}/{_fmt(lat.get('max'), 2)}"
                if lat
                else "-",
                _fmt(row.get("missing")),
                _fmt(row.get("duplicated")),
                _fmt(row.get("out_of_order")),
                _fmt(sum(row.get("ended", {}).values()) if "ended" in row else None),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for r in rows:
        lines.append(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=False))
            )
        )
    pub = out["publish"]
    if pub["attempted"]:
        lines.append(
            f"published {pub['accepted']:,}/{pub['attempted']:,} ({pub['mode']}"
            + (f", target {pub['rate_target']:g}/s" if pub["rate_target"] else "")
            + f", achieved {_fmt(pub['rate_achieved'], 0)}/s); publish answer p50/p99 "
            f"{_fmt(pub['answer_ms']['p50'], 2)}/{_fmt(pub['answer_ms']['p99'], 2)} ms"
        )
    if out["deliveries"]:
        d = out["deliveries"]
        lines.append(
            f"deliveries: {d['delivered']:,} of {d['expected']:,} in "
            f"{d['first_publish_to_last_delivery_s']:.3f}s = {_fmt(d['per_s'], 0)}/s"
        )
    server = out["server"]
    if "rss_kib_before" in server:
        per = server["rss_per_connection_kib"]
        lines.append(
            f"server RSS: {server['rss_kib_before']:,} KiB before, "
            f"{server['rss_kib_connected']:,} KiB connected = "
            + (f"{per:.1f} KiB per connection" if per is not None else "-")
            + (f"; {server['rss_kib_end']:,} KiB at the end" if server.get("rss_kib_end") else "")
        )
    if server.get("cpu_percent_during_delivery"):
        cpu = ", ".join(
            f"pid {pid} {value:.0f}%"
            for pid, value in server["cpu_percent_during_delivery"].items()
        )
        lines.append(f"server CPU while events flowed: {cpu}")
    gen = out["generator"]
    cpu_parts = [
        f"#{p['worker']} connect {p['cpu_percent_connect']:.0f}%"
        + (f" deliver {p['cpu_percent_delivery']:.0f}%" if "cpu_percent_delivery" in p else "")
        for p in gen["processes"]
    ]
    if "publisher_cpu_percent" in gen:
        cpu_parts.append(f"publisher {gen['publisher_cpu_percent']:.0f}%")
    lines.append("generator CPU (% of one core): " + "; ".join(cpu_parts))
    for warning in out["warnings"]:
        lines.append(f"WARNING: {warning}")
    for problem in out["problems"]:
        lines.append(f"PROBLEM: {problem}")
    if not out["ok"]:
        lines.append("NOT OK")
    elif out["publish"]["attempted"]:
        lines.append("OK: every client connected and saw every event once, in order")
    else:
        lines.append(
            "OK: every client connected" + (" and stayed connected" if out["transports"] else "")
        )
    return "\n".join(lines)


def write_json(out: dict[str, Any], path: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2, default=str) + "\n")
