"""`rankpulse`: serve, token, rebuild, migrate (and the operator tools)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from .config import ConfigError, load_settings


def _serve(args: argparse.Namespace) -> None:
    # The configuration first: a bad value stops the start before the service is imported.
    settings = load_settings(**({"port": args.port} if args.port else {}))
    from .workers import WORKER_ENV, reuse_port_socket, supervise

    if args.workers > 1:  # the supervisor serves nothing itself: it never imports the app
        if settings.redis_url is None:
            sys.exit(
                "rankpulse serve: --workers needs REDIS_URL: without it each worker would run "
                "its own in-process engine (its own board and event log), not one service"
            )
        worker_argv = ["--host", args.host, "--port", str(settings.port)]
        worker_argv += ["--access-log"] if args.access_log else []
        sys.exit(supervise(args.workers, worker_argv))

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from . import create_app
    from .drain import shutdown_trigger
    from .gc_policy import freeze_once_started
    from .web import hypercorn_fast

    app = create_app(settings)
    freeze_once_started(app)  # full GC passes skip start-up's heap (gc_policy.py)
    config = Config()
    if os.environ.get(WORKER_ENV):  # one of --workers N: share the port with the others
        listener = reuse_port_socket(args.host, settings.port)
        config.bind = [f"fd://{listener.fileno()}"]
    else:
        config.bind = [f"{args.host}:{settings.port}"]
    config.accesslog = "-" if args.access_log else None
    # %(r)s is method, path and protocol without the query string: tokens never reach the log.
    config.access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'
    # After the drain (PROTOCOL 3.7) only short requests are left: exit within
    # DRAIN_SECONDS + 5 s needs this, plus the bounded Runtime.stop().
    config.graceful_timeout = 1
    # Thousands of clients reconnecting at once must not overflow the accept queue.
    config.backlog = 2048
    # PROTOCOL 3.3: a client frame over 64 KiB closes the socket with 1009.
    config.websocket_max_message_size = 64 * 1024
    # Idle keep-alive connections close after KEEP_ALIVE_SECONDS, timed by a timer handle per
    # connection instead of Hypercorn's task per request (web/hypercorn_fast.py).
    try:
        config.keep_alive_timeout = hypercorn_fast.keep_alive_seconds()
        # (with the fast lane unless FAST_LANE=false; dead peers bounded on the listeners)
        hypercorn_fast.install(user_timeout=settings.tcp_user_timeout_seconds)
    except ConfigError as error:
        sys.exit(f"rankpulse serve: {error}")
    url = f"http://{_display_host(args.host)}:{settings.port}"
    if args.demo:
        from .demo import run_demo

        @app.while_serving
        async def _demo_traffic():  # type: ignore[no-untyped-def]
            task = asyncio.create_task(run_demo(url, players=args.demo_players))
            yield
            task.cancel()

    print(f"Love Rank Pulse: open {url}/", flush=True)
    # SIGTERM drains instead of cutting every stream at once (drain.py).
    trigger = shutdown_trigger(app.extensions["pulse"])
    try:
        import uvloop

        uvloop.run(serve(app.asgi_app, config, shutdown_trigger=trigger))
    except ImportError:
        asyncio.run(serve(app.asgi_app, config, shutdown_trigger=trigger))


def _display_host(host: str) -> str:
    return "localhost" if host in ("0.0.0.0", "127.0.0.1", "::") else host


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    print(f"playing matches against {args.url} (Ctrl+C to stop)", flush=True)
    played = asyncio.run(run_demo(args.url, args.token, args.players, args.rate, args.matches))
    print(f"played {played} matches")


def _token(args: argparse.Namespace) -> None:
    from .auth import Authenticator

    settings = load_settings()
    if not settings.jwt_secret:
        sys.exit("rankpulse token: set JWT_SECRET (the service's signing secret) first")
    print(Authenticator(settings).issue(args.sub, args.scope, args.ttl))


def _rebuild(args: argparse.Namespace) -> None:
    from .runtime import Runtime
    from .store.rebuild import rebuild

    async def run() -> int | None:  # an operator's rebuild takes over a running one: an int
        runtime = Runtime(load_settings())
        await runtime.store.connect(migrate=runtime.settings.migrate_on_start)
        await runtime.engine.start()
        try:
            return await rebuild(runtime.store, runtime.engine, runtime.relay)
        finally:
            await runtime.engine.stop()
            await runtime.store.disconnect()

    print(f"rebuilt the board from SQL: {asyncio.run(run())} players")


def _migrate(args: argparse.Namespace) -> None:
    from .store.migrate import (
        ForeignSchema,
        SchemaNotCurrent,
        head_revision,
        migrate_to_head,
        require_head,
    )

    url = load_settings().database_url
    try:
        if args.check:
            asyncio.run(require_head(url))
            print(f"the database is at the current revision ({head_revision()})")
        else:
            print(f"the database is at revision {asyncio.run(migrate_to_head(url))} (current)")
    # What an operator can act on gets one line; anything else keeps its traceback.
    except (SchemaNotCurrent, ForeignSchema, OSError) as exc:
        sys.exit(f"rankpulse migrate: {exc}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rankpulse", description="Love Rank Pulse")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one instance with Hypercorn (uvloop)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, help="default: $PORT, else 8000")
    serve.add_argument("--access-log", action="store_true", help="log each request")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run N instances sharing the port (SO_REUSEPORT; needs REDIS_URL); "
        "about one per core, see the README",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="also play demo matches against this instance (development mode)",
    )
    serve.add_argument("--demo-players", type=int, default=200)
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="play demo matches against a running service")
    demo.add_argument("--url", default="http://127.0.0.1:8000")
    demo.add_argument("--token", help="a matches:write token (default: the dev endpoint's)")
    demo.add_argument("--players", type=int, default=200)
    demo.add_argument("--rate", type=float, default=2.0, help="matches per second")
    demo.add_argument("--matches", type=int, help="stop after this many")
    demo.set_defaults(run=_demo)

    token = commands.add_parser("token", help="mint a token signed with JWT_SECRET")
    token.add_argument("--sub", required=True, help="the player id")
    token.add_argument("--scope", default="", help='space-separated, e.g. "matches:write admin"')
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.set_defaults(run=_token)

    rebuild = commands.add_parser("rebuild", help="rebuild the engine's board from SQL")
    rebuild.set_defaults(run=_rebuild)

    migrate = commands.add_parser(
        "migrate",
        help="upgrade the database schema to this release (instances do it at start "
        "unless MIGRATE_ON_START=false)",
    )
    migrate.add_argument(
        "--check", action="store_true", help="only check: exit 1 unless the schema is current"
    )
    migrate.set_defaults(run=_migrate)

    from .loadtest import add_parser as add_loadtest_parser

    add_loadtest_parser(commands)

    from .loadtest.soak import add_parser as add_soak_parser

    add_soak_parser(commands)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ConfigError as exc:
        sys.exit(f"rankpulse: {exc}")
    except KeyboardInterrupt:
        pass
