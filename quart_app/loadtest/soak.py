"""`rankpulse soak`: a long run against any deployment that checks nothing is lost.

For `--duration` seconds, a writer plays matches (create + result) at `--rate` results per
second through the HTTP API of the instances in turn, and `--clients` clients follow the
rooms on a random transport each session (SSE, WebSocket, long-poll), each session on a
random instance, dropping the connection after a random while and resuming from its last
cursor. A reference reader that never drops gives the log's order (see soak_check); every
client must see every event of its rooms exactly once, in that order, with the same
payload; and the reference must hold the `match:result` of every 2xx result once. The
servers' RSS, open files and threads (from /proc, with --pid) and what /metrics exports
(asyncio tasks among them) are read at the start and the end. Prints a table, writes JSON,
exits 1 when a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from .soak_check import ClientCheck, Reference, scan
from .soak_clients import TRANSPORTS, Session, SessionEnded, post_json, run_session
from .soak_probe import settle, snapshot
from .sysinfo import cpu_seconds, raise_nofile
from .tokens import dev_token, mint
from .wire import Target, WireError, parse_target

WRITER_SUB = "soak-writer"
Answer = tuple[int, dict[str, str], bytes]  # status, headers (lower-case names), body
WRITE_TIMEOUT = 30.0
MAX_WRITES_IN_FLIGHT = 100  # beyond, the deployment is not keeping up: skip and count


@dataclass
class SoakOptions:
    urls: list[str]
    duration: float = 60.0
    clients: int = 60
    rate: float = 10.0  # results per second
    rooms: list[str] = field(default_factory=lambda: ["matches", "leaderboard:global"])
    mix: dict[str, float] = field(default_factory=lambda: {"sse": 0.45, "ws": 0.45, "poll": 0.1})
    session_seconds: tuple[float, float] = (5.0, 60.0)
    players: int = 200
    token: str | None = None  # every request's token (it needs matches:write and admin)
    jwt_secret: str | None = None
    pids: list[int] = field(default_factory=list)
    identities: int = 50
    ramp_seconds: float = 10.0  # clients start spread over this long
    drain_timeout: float = 60.0  # after the last write, for every client to catch up
    seed: int = 1
    json_path: str | None = None
    quiet: bool = False


class Tokens:
    """A writer token and reader tokens per instance (development-mode instances each sign
    with their own secret, so a dev token is good on its own instance only)."""

    def __init__(self, options: SoakOptions, targets: list[Target]) -> None:
        subs = [f"soak-reader-{i}" for i in range(max(1, options.identities))]
        if options.token:
            self.writer = [options.token for _ in targets]
            self.readers = [[options.token] for _ in targets]
        elif options.jwt_secret:
            secret = options.jwt_secret
            writer = mint(secret, WRITER_SUB, "matches:write admin")
            minted = [mint(secret, sub) for sub in subs]
            self.writer = [writer for _ in targets]
            self.readers = [minted for _ in targets]
        else:
            self.writer = [dev_token(t, WRITER_SUB, "matches:write admin") for t in targets]
            self.readers = [[dev_token(t, sub) for sub in subs] for t in targets]

    def reader(self, instance: int, client: int) -> str:
        tokens = self.readers[instance]
        return tokens[client % len(tokens)]


@dataclass
class Writes:
    """What the writer was told."""

    results_ok: list[str] = field(default_factory=list)
    creates_ok: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    def note(self, what: str, response: Answer | None, error: str | None = None) -> None:
        if response is None:
            self.statuses[f"{what} {error or 'no answer'}"] += 1
            return
        status, headers, body = response
        self.statuses[f"{what} {status}"] += 1
        if status == 503 and not headers.get("retry-after"):
            self.server_errors.append(f"{what} 503 without Retry-After")
        elif status >= 500 and status != 503:
            self.server_errors.append(f"{what} {status}: {body[:200]!r}")


class Soak:
    def __init__(self, options: SoakOptions) -> None:
        self.options = options
        self.targets = [parse_target(url) for url in options.urls]
        self.addresses = [t.resolve() for t in self.targets]
        self.rng = random.Random(options.seed)
        self.run_id = uuid.uuid4().hex[:8]
        self.writes = Writes()
        self.stop_clients = asyncio.Event()
        self.checks: list[ClientCheck] = []
        self.http: list[httpx.AsyncClient] = []

    def say(self, text: str) -> None:
        if not self.options.quiet:
            print(f"[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)

    async def run(self) -> dict[str, Any]:
        options = self.options
        raise_nofile()
        self.tokens = await asyncio.to_thread(Tokens, options, self.targets)
        self.http = [
            httpx.AsyncClient(
                base_url=t.url,
                timeout=30,
                headers={"Authorization": f"Bearer {self.tokens.writer[i]}"},
            )
            for i, t in enumerate(self.targets)
        ]
        try:
            report = await self._run()
        finally:
            for client in self.http:
                await client.aclose()
        # Read the end state once the servers have seen every client go (the soak's own
        # connections included), so what is left open is what leaked.
        settled = await settle(options.urls, report["servers"]["start"]["metrics"], 90)
        report["servers"]["end"] = await snapshot(options.urls, options.pids)
        report["servers"]["end"]["settled_seconds"] = settled
        return report

    async def _run(self) -> dict[str, Any]:
        options = self.options
        start_cursor = await self._start_cursor()
        self.reference = Reference(start_cursor)
        before = await snapshot(options.urls, options.pids)
        cpu_before, began = cpu_seconds(), time.monotonic()
        reference_task = asyncio.create_task(self._follow_reference(start_cursor))
        clients = [
            asyncio.create_task(self._client(i, start_cursor)) for i in range(options.clients)
        ]
        settler = asyncio.create_task(self._settle_every_second())
        self.say(
            f"run {self.run_id}: {options.clients} clients, {options.rate}/s results, "
            f"{options.duration:.0f} s on {len(self.targets)} instance(s)"
        )
        await self._write_for(options.duration)
        wrote = time.monotonic()
        if self.writes.in_flight:
            await asyncio.wait(self.writes.in_flight, timeout=60)
        caught_up = await self._drain()
        self.stop_clients.set()
        for task in (*clients, settler):
            task.cancel()
        await asyncio.gather(*clients, settler, return_exceptions=True)
        reference_task.cancel()
        await asyncio.gather(reference_task, return_exceptions=True)
        cpu_used, elapsed = cpu_seconds() - cpu_before, time.monotonic() - began
        for check in self.checks:
            check.finish(self.reference)
        return self._report(before, cpu_used, elapsed, wrote - began, caught_up)

    # writing ------------------------------------------------------------------------------
    async def _start_cursor(self) -> str:
        """An announcement in the first room: its cursor is where everyone starts."""
        body = {
            "room": self.options.rooms[0],
            "event": "announcement",
            "data": {"soak": self.run_id},
        }
        response = await self.http[0].post("/api/publish", json=body)
        if response.status_code != 202:
            raise SystemExit(
                f"POST /api/publish answered {response.status_code}: "
                f"{response.text[:200]} (the token needs scope admin)"
            )
        return str(response.json()["id"])

    async def _write_for(self, seconds: float) -> None:
        interval = 1.0 / self.options.rate
        start = time.monotonic()
        n = 0
        while (due := start + n * interval) < start + seconds:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the rate's pace
            if len(self.writes.in_flight) >= MAX_WRITES_IN_FLIGHT:
                self.writes.statuses["skipped: writes in flight at the limit"] += 1
            else:
                task = asyncio.create_task(self._play(n))
                self.writes.in_flight.add(task)
                task.add_done_callback(self.writes.in_flight.discard)
            n += 1
            if n % max(1, int(self.options.rate * 60)) == 0:
                failures: Counter[str] = Counter()
                for check in self.checks:
                    failures.update(check.failures)
                self.say(
                    f"{n} matches played, reference at {len(self.reference)} events, "
                    f"statuses {dict(self.writes.statuses)}, session failures {dict(failures)}"
                )

    async def _play(self, n: int) -> None:
        players = self.rng.sample(range(self.options.players), 2)
        a, b = (f"soak-{self.run_id}-p{p}" for p in players)
        match_id = f"soak-{self.run_id}-m{n}"
        first = n % len(self.targets)
        second = (n + 1) % len(self.targets)
        created = await self._post(
            first, "create", "/api/matches", {"match_id": match_id, "player_ids": [a, b]}
        )
        if created is None or created[0] not in (200, 201):
            return
        self.writes.creates_ok.append(match_id)
        outcome: dict[str, Any] = self.rng.choice(
            [{"winner_id": a}, {"winner_id": b}, {"draw": True}]
        )
        result = await self._post(second, "result", f"/api/matches/{match_id}/result", outcome)
        if result is not None and result[0] == 200:
            self.writes.results_ok.append(match_id)

    async def _post(
        self, instance: int, what: str, path: str, body: dict[str, Any]
    ) -> Answer | None:
        try:
            response = await post_json(
                self.targets[instance],
                self.addresses[instance],
                path,
                self.tokens.writer[instance],
                json.dumps(body).encode(),
                WRITE_TIMEOUT,
            )
        except (OSError, TimeoutError, WireError, SessionEnded) as exc:
            self.writes.note(what, None, f"{type(exc).__name__} {exc}".strip())
            return None
        self.writes.note(what, response)
        return response

    # reading ------------------------------------------------------------------------------
    async def _follow_reference(self, cursor: str) -> None:
        """Long-polls from the start cursor, never dropping: the log's order of the rooms."""
        rooms = ",".join(self.options.rooms)
        token = self.tokens.reader(0, 0)
        async with httpx.AsyncClient(base_url=self.targets[0].url, timeout=40) as client:
            while True:
                try:
                    response = await client.get(
                        "/api/poll",
                        params={"rooms": rooms, "cursor": cursor, "timeout": "10"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                except httpx.HTTPError:
                    await asyncio.sleep(0.5)  # retry pace while an instance is away
                    continue
                if response.status_code != 200:
                    await asyncio.sleep(0.5)
                    continue
                for seen in scan(response.content):
                    self.reference.add(seen)
                cursor = str(response.json()["cursor"])

    async def _client(self, index: int, cursor: str) -> None:
        options = self.options
        check = ClientCheck(f"c{index}")
        self.checks.append(check)
        rng = random.Random(options.seed * 100_003 + index)
        await asyncio.sleep(options.ramp_seconds * index / max(1, options.clients))
        transports = list(options.mix)
        weights = [options.mix[t] for t in transports]
        while not self.stop_clients.is_set():
            transport = rng.choices(transports, weights)[0]
            instance = rng.randrange(len(self.targets))
            session = Session(
                self.targets[instance],
                self.addresses[instance],
                options.rooms,
                self.tokens.reader(instance, index),
                cursor,
                rng.uniform(*options.session_seconds),
            )
            failure: str | None = None
            try:
                await run_session(transport, session, check)
            except SessionEnded as ended:
                failure = str(ended)
            except (OSError, TimeoutError, WireError) as exc:
                failure = f"{transport} {type(exc).__name__}"
            cursor = session.cursor
            check.note_session(transport, failure)
            if failure:
                await asyncio.sleep(rng.uniform(0.2, 1.0))  # a reconnect delay, as EventSource's

    async def _settle_every_second(self) -> None:
        while True:
            await asyncio.sleep(1)  # checking is cheap; once a second keeps the pending short
            for check in self.checks:
                check.settle(self.reference)

    async def _drain(self) -> bool:
        """After the last write: wait until the reference holds every result and every client
        has checked up to the reference's end."""
        deadline = time.monotonic() + self.options.drain_timeout
        wanted = set(self.writes.results_ok)
        while time.monotonic() < deadline:
            results = {m for e, m in self.reference.events if e == "match:result"}
            if wanted <= results:
                for check in self.checks:
                    check.settle(self.reference)
                if all(c.expected >= len(self.reference) and not c.pending for c in self.checks):
                    return True
            await asyncio.sleep(0.5)  # polling the progress of readers that run on their own
        return False

    # the report ---------------------------------------------------------------------------
    def _report(
        self,
        before: dict[str, Any],
        cpu_used: float,
        elapsed: float,
        write_seconds: float,
        caught_up: bool,
    ) -> dict[str, Any]:
        reference_results = Counter(m for e, m in self.reference.events if e == "match:result")
        reference_creates = Counter(m for e, m in self.reference.events if e == "match:created")
        lost_results = [m for m in self.writes.results_ok if reference_results[m] != 1]
        lost_creates = [m for m in self.writes.creates_ok if reference_creates[m] != 1]
        failing = [c for c in self.checks if not c.ok]
        sessions: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        resets: Counter[str] = Counter()
        for check in self.checks:
            sessions.update(check.sessions)
            failures.update(check.failures)
            resets.update(check.resets)
        clients = {
            "count": len(self.checks),
            "ok": len(self.checks) - len(failing),
            "events_checked": sum(c.checked for c in self.checks),
            "duplicates": sum(c.duplicates for c in self.checks),
            "missing": sum(c.missing for c in self.checks),
            "mismatched": sum(c.mismatched for c in self.checks),
            "conflated_skips": sum(c.conflated_skips for c in self.checks),
            "resets": dict(resets),
            "sessions": dict(sessions),
            "session_failures": dict(failures),
            "failing": {c.name: c.summary() for c in failing[:10]},
        }
        reference = {
            "events": len(self.reference),
            "duplicates": self.reference.duplicates,
            "resets": self.reference.resets,
            "results_not_once": lost_results[:20],
            "creates_not_once": lost_creates[:20],
        }
        ok = (
            not failing
            and caught_up
            and not lost_results
            and not lost_creates
            and not self.reference.duplicates
            and not self.reference.resets
            and not self.writes.server_errors
            and bool(self.writes.results_ok)
        )
        options = asdict(self.options)
        options.pop("token", None)
        options.pop("jwt_secret", None)
        return {
            "ok": ok,
            "run": self.run_id,
            "options": options,
            "seconds": {"total": round(elapsed, 1), "writing": round(write_seconds, 1)},
            "caught_up": caught_up,
            "writes": {
                "results_ok": len(self.writes.results_ok),
                "creates_ok": len(self.writes.creates_ok),
                "results_per_second": round(len(self.writes.results_ok) / write_seconds, 2),
                "statuses": dict(self.writes.statuses),
                "server_errors": self.writes.server_errors[:20],
            },
            "reference": reference,
            "clients": clients,
            "servers": {"start": before, "end": {}},
            "generator": {
                "cpu_seconds": round(cpu_used, 1),
                "cpu_percent": round(100 * cpu_used / elapsed, 1),
                "pid": os.getpid(),
            },
        }


def table(report: dict[str, Any]) -> str:
    w, r, c, g = report["writes"], report["reference"], report["clients"], report["generator"]
    rows = [
        ("verdict", "OK" if report["ok"] else "FAILED"),
        (
            "seconds (writing / total)",
            f"{report['seconds']['writing']} / {report['seconds']['total']}",
        ),
        ("results 2xx (per second)", f"{w['results_ok']} ({w['results_per_second']})"),
        ("write statuses", json.dumps(w["statuses"])),
        ("5xx (other than 503 + Retry-After)", len(w["server_errors"])),
        (
            "reference events / dup / resets",
            f"{r['events']} / {r['duplicates']} / {len(r['resets'])}",
        ),
        ("2xx results not in the log once", len(r["results_not_once"])),
        ("clients ok / all", f"{c['ok']} / {c['count']}"),
        ("events checked", c["events_checked"]),
        (
            "duplicates / missing / mismatched",
            f"{c['duplicates']} / {c['missing']} / {c['mismatched']}",
        ),
        ("sessions", json.dumps(c["sessions"])),
        ("session failures", json.dumps(c["session_failures"])),
        ("stream:reset seen", json.dumps(c["resets"])),
        ("all caught up at the end", report["caught_up"]),
        ("generator CPU", f"{g['cpu_seconds']} s ({g['cpu_percent']} %)"),
    ]
    start, end = report["servers"]["start"], report["servers"]["end"]
    for pid, facts in start["processes"].items():
        later = end["processes"].get(pid, {})
        for key in ("rss_kib", "open_fds", "threads"):
            rows.append((f"pid {pid} {key} start -> end", f"{facts.get(key)} -> {later.get(key)}"))
    for url, metrics in start["metrics"].items():
        later = end["metrics"].get(url, {})
        if isinstance(metrics, str) or isinstance(later, str):
            rows.append((f"{url} /metrics", f"{metrics} -> {later}"))
            continue
        for key in ("rankpulse_connections", "rankpulse_asyncio_tasks", "rankpulse_outbox_pending"):
            if key in metrics or key in later:
                rows.append((f"{url} {key[10:]}", f"{metrics.get(key)} -> {later.get(key)}"))
    width = max(len(str(name)) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


async def run_soak(options: SoakOptions) -> dict[str, Any]:
    return await Soak(options).run()


# the command line -----------------------------------------------------------------------------
def _mix(text: str) -> dict[str, float]:
    """ "sse=45,ws=45,poll=10" -> weights."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in TRANSPORTS or not weight:
            raise argparse.ArgumentTypeError(f"bad transport weight {part!r}")
        mix[name.strip()] = float(weight)
    if sum(mix.values()) <= 0:
        raise argparse.ArgumentTypeError("the weights add up to nothing")
    return mix


def _range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        pair = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad range {text!r} (e.g. 5-60)") from None
    if not 0 < pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError(f"bad range {text!r} (e.g. 5-60)")
    return pair


def add_parser(commands: Any) -> None:
    soak = commands.add_parser(
        "soak",
        help="a long mixed-transport run with drops and resumes that checks every event "
        "exactly once and in order",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    soak.add_argument(
        "--url",
        action="append",
        dest="urls",
        required=True,
        help="base URL of an instance; repeat for several",
    )
    soak.add_argument("--duration", type=float, default=60.0, help="seconds of writing")
    soak.add_argument("--clients", type=int, default=60)
    soak.add_argument("--rate", type=float, default=10.0, help="results (matches) per second")
    soak.add_argument("--rooms", default="matches,leaderboard:global")
    soak.add_argument(
        "--mix", type=_mix, default="sse=45,ws=45,poll=10", help="transport weights per session"
    )
    soak.add_argument(
        "--session",
        type=_range,
        default="5-60",
        help="seconds a session lasts before the client drops it",
    )
    soak.add_argument("--players", type=int, default=200)
    soak.add_argument("--token", help="a token with scopes matches:write and admin")
    soak.add_argument(
        "--jwt-secret",
        default=os.environ.get("JWT_SECRET"),
        help="mint tokens with this HMAC secret (default: $JWT_SECRET; "
        "neither: POST /api/dev/token of development-mode instances)",
    )
    soak.add_argument(
        "--pid",
        type=int,
        action="append",
        dest="pids",
        default=[],
        help="a server process to read from /proc (repeat)",
    )
    soak.add_argument("--ramp", type=float, default=10.0, help="seconds to start all clients")
    soak.add_argument("--drain-timeout", type=float, default=60.0)
    soak.add_argument("--seed", type=int, default=1)
    soak.add_argument("--json", dest="json_path", help="write the report here")
    soak.set_defaults(run=main)


def main(args: argparse.Namespace) -> None:
    options = SoakOptions(
        urls=args.urls,
        duration=args.duration,
        clients=args.clients,
        rate=args.rate,
        rooms=[r for r in args.rooms.split(",") if r],
        mix=args.mix if isinstance(args.mix, dict) else _mix(args.mix),
        session_seconds=args.session if isinstance(args.session, tuple) else _range(args.session),
        players=args.players,
        token=args.token,
        jwt_secret=args.jwt_secret,
        pids=args.pids,
        ramp_seconds=args.ramp,
        drain_timeout=args.drain_timeout,
        seed=args.seed,
        json_path=args.json_path,
    )
    try:
        import uvloop

        report = uvloop.run(run_soak(options))
    except ImportError:
        report = asyncio.run(run_soak(options))
    print(table(report))
    if options.json_path:
        with open(options.json_path, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
            out.write("\n")
    sys.exit(0 if report["ok"] else 1)
