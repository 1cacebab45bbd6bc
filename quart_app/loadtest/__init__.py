"""`rankpulse loadtest`: a load generator to point at any deployment.

Subscribers (SSE, long-poll, WebSocket) spread over one or more instances and over several
generator processes, each its own uvloop; the coordinator publishes numbered, timestamped
announcements through POST /api/publish; every subscriber checks that it saw every event
exactly once and in order, and a sample of deliveries gives the publish-to-receive
latency. Prints a table, writes JSON, exits 1 when a client missed something.

Also runs as `python -m quart_app.loadtest`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["add_parser", "build_parser", "main", "options_from_args"]

_EPILOG = """\
examples:
  # 1,000 SSE subscribers, a burst of 1,000 events (development mode: tokens from the server)
  rankpulse loadtest --url http://127.0.0.1:8000 --sse 1000 --burst 1000

  # two instances, 20 events/s for 30 s, the generator pinned to CPU 1, server RSS read
  rankpulse loadtest --url http://127.0.0.1:8000 --url http://127.0.0.1:8001 \\
      --sse 1000 --ws 200 --poll 20 --rate 20 --duration 30 --cpu 1 \\
      --jwt-secret "$JWT_SECRET" --server-pid 1234 --json out.json

  --server-pid: the instance's process. `rankpulse serve` is one process; with the
  Hypercorn CLI the app runs in a child (worker) process even with one worker: the RSS
  read here is that of the given pid and all its descendants, so either pid works.

  Beyond ~28,000 connections to one address, give --source-ips 127.0.0.2-127.0.0.9 (one
  set of ephemeral ports per source address), and stay under the open-file limit per
  process (the generator splits connections over --processes).
"""


def _source_ips(text: str) -> list[str]:
    """ "127.0.0.1,127.0.0.5" or a range "127.0.0.2-127.0.0.9" (last octet)."""
    ips: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        if sep:
            prefix, _, first = low.rpartition(".")
            last = high.rpartition(".")[2]
            if not (prefix and first.isdigit() and last.isdigit()):
                raise argparse.ArgumentTypeError(f"bad address range {part!r}")
            ips.extend(f"{prefix}.{octet}" for octet in range(int(first), int(last) + 1))
        else:
            ips.append(part)
    return ips


def _cpus(text: str) -> set[int]:
    from .sysinfo import parse_cpu_list

    try:
        return parse_cpu_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _configure(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("where")
    where.add_argument(
        "--url",
        action="append",
        dest="urls",
        default=[],
        metavar="URL",
        help="base URL of an instance; repeat for several (subscribers are spread round-robin)",
    )
    where.add_argument("--publish-url", help="publish here (default: the first --url)")
    where.add_argument(
        "--source-ips",
        type=_source_ips,
        default=[],
        metavar="LIST",
        help="bind connections to these source addresses in turn, e.g. "
        "127.0.0.2-127.0.0.9 (~28k ports each per destination)",
    )

    auth = parser.add_argument_group(
        "tokens (default: POST /api/dev/token of a development-mode instance)"
    )
    auth.add_argument(
        "--token", help="a token for the subscribers (and the publisher unless --publish-token)"
    )
    auth.add_argument("--publish-token", help="a token with scope admin, for POST /api/publish")
    auth.add_argument(
        "--jwt-secret",
        default=None,
        help="mint tokens with this HMAC secret (default: $JWT_SECRET if set)",
    )
    auth.add_argument("--jwt-algorithm", default="HS256")
    auth.add_argument("--jwt-audience", default=os.environ.get("JWT_AUDIENCE"))
    auth.add_argument("--jwt-issuer", default=os.environ.get("JWT_ISSUER"))
    auth.add_argument(
        "--anonymous", action="store_true", help="subscribe without a token (PUBLIC_READ=true)"
    )
    auth.add_argument(
        "--identities",
        type=int,
        default=100,
        help="distinct subscriber identities (token subs), used in turn",
    )

    load = parser.add_argument_group("load")
    load.add_argument("--sse", type=int, default=0, help="SSE subscribers")
    load.add_argument("--poll", type=int, default=0, help="long-poll subscribers")
    load.add_argument("--ws", type=int, default=0, help="WebSocket subscribers")
    load.add_argument(
        "--room",
        help="the room (default: match:loadtest-<run id>, a public room "
        "nobody else uses: no snapshot, no other traffic)",
    )
    load.add_argument(
        "--top",
        type=int,
        default=None,
        help="`top` for the leaderboard:initial snapshot (default 1 when --room "
        "is leaderboard:global)",
    )
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, help="events per second, for --duration")
    mode.add_argument("--burst", type=int, help="this many events, as fast as possible")
    load.add_argument("--duration", type=float, default=10.0, help="seconds of --rate")
    load.add_argument(
        "--publishers",
        type=int,
        default=1,
        help="publisher connections (each keeps its events in order)",
    )
    load.add_argument(
        "--window",
        type=int,
        default=64,
        help="pipelined publish requests in flight per publisher connection",
    )
    load.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="hold the connections idle this long before publishing",
    )

    run = parser.add_argument_group("generator")
    run.add_argument(
        "--processes",
        type=int,
        default=1,
        help="generator processes holding the subscribers (each its own uvloop)",
    )
    run.add_argument(
        "--cpu",
        type=_cpus,
        dest="cpus",
        default=None,
        metavar="LIST",
        help="pin the generator processes to these CPUs (taskset -c syntax)",
    )
    run.add_argument(
        "--connect-concurrency",
        type=int,
        default=100,
        help="connections being opened at once, over all processes. Keep it at "
        "most the server's listen backlog (Hypercorn: 100): beyond, SYNs are "
        "dropped and their retransmits (1, 3, 7, 15 s) stretch the ramp",
    )
    run.add_argument("--connect-timeout", type=float, default=30.0)
    run.add_argument(
        "--connect-retries",
        type=int,
        default=2,
        help="retry a connect that failed on the network (not on an HTTP 4xx) "
        "this many times, as EventSource would; retries are reported",
    )
    run.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds between the last connect and reading the server's RSS",
    )
    run.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        help="after the last publish, give up when nothing arrived this long",
    )
    run.add_argument("--poll-timeout", type=int, default=25, help="`timeout` of each long poll")
    run.add_argument(
        "--sample-budget",
        type=int,
        default=2_000_000,
        help="latency samples kept per transport (every k-th event sampled)",
    )
    run.add_argument(
        "--server-pid",
        type=int,
        action="append",
        dest="server_pids",
        default=[],
        help="read this server process's RSS and CPU (with its children); repeat",
    )
    run.add_argument("--json", dest="json_path", metavar="PATH", help="write the report here")
    run.add_argument("--label", help="a name for this run, copied into the JSON")
    run.add_argument("--quiet", action="store_true", help="no progress lines and no table")


def options_from_args(args: argparse.Namespace) -> Any:
    from .runner import Options

    secret = args.jwt_secret
    if secret is None and not args.token and not args.anonymous:
        secret = os.environ.get("JWT_SECRET") or None
    top = args.top
    if top is None and args.room == "leaderboard:global":
        top = 1
    for name in ("sse", "poll", "ws", "processes", "publishers", "window", "identities"):
        if getattr(args, name) < 0:
            raise SystemExit(f"loadtest: --{name} must not be negative")
    if args.sse + args.poll + args.ws == 0 and (args.burst or args.rate):
        raise SystemExit("loadtest: no subscribers (--sse, --poll, --ws)")
    return Options(
        urls=args.urls or ["http://127.0.0.1:8000"],
        sse=args.sse,
        poll=args.poll,
        ws=args.ws,
        room=args.room,
        top=top,
        rate=args.rate,
        duration=args.duration,
        burst=args.burst,
        publishers=max(1, args.publishers),
        window=max(1, args.window),
        publish_url=args.publish_url,
        token=args.token,
        publish_token=args.publish_token,
        jwt_secret=secret,
        jwt_algorithm=args.jwt_algorithm,
        jwt_audience=args.jwt_audience,
        jwt_issuer=args.jwt_issuer,
        anonymous=args.anonymous,
        identities=args.identities,
        processes=max(1, args.processes),
        source_ips=args.source_ips,
        cpus=args.cpus,
        server_pids=args.server_pids,
        connect_concurrency=args.connect_concurrency,
        connect_timeout=args.connect_timeout,
        connect_retries=max(0, args.connect_retries),
        settle=args.settle,
        hold=args.hold,
        drain_timeout=args.drain_timeout,
        poll_timeout=args.poll_timeout,
        sample_budget=args.sample_budget,
        json_path=args.json_path,
        quiet=args.quiet,
        label=args.label,
    )


def _run(args: argparse.Namespace) -> None:
    from .runner import run_sync

    out = run_sync(options_from_args(args))
    if not out["ok"]:
        sys.exit(1)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register `loadtest` on the `rankpulse` sub-command parsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "loadtest",
        help="hold SSE/poll/WebSocket subscribers, publish, measure",
        description=__doc__,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _configure(parser)
    parser.set_defaults(run=_run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m quart_app.loadtest",
        description=__doc__,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _configure(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        _run(args)
    except KeyboardInterrupt:
        sys.exit(130)
