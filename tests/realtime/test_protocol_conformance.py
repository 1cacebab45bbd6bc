"""PROTOCOL statements that no other test held, each against real processes: a slow
WebSocket is closed with 4008 (3.5); a draining instance refuses a new WebSocket before the
upgrade (3.7); the write rate limit holds across instances (3.6); SIGTERM to the supervisor
of `serve --workers N` drains every worker (3.7, 6)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Callable

import h11
import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..clients import HttpApi, SSEClient, WSClient, poll
from ..drain_clients import ROOM, Follower
from ..helpers import lane_requests
from ..http_wire import read_response
from ..services import LiveServer, wait_until

SECRET = "protocol-conformance-secret-0123456789"


async def test_a_websocket_that_cannot_keep_up_is_closed_with_4008(
    live_servers: Callable[..., LiveServer],
) -> None:
    """PROTOCOL 3.5/3.3: critical events are never conflated; a WebSocket still over its
    budget with only those queued is closed with 4008, and the client resumes elsewhere."""
    server = live_servers(
        env={"JWT_SECRET": SECRET, "SEND_QUEUE_MAX": "50", "EVENT_LOG_SIZE": "100"}
    )
    admin = HttpApi(server.url, server.token("ops", "admin"))
    token = server.token("viewer")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    # max_queue=1: the library stops reading the socket once one frame waits unread, so
    # the server's writes pile up as they would behind a slow mobile link.
    stalled = await websockets.connect(
        f"ws://127.0.0.1:{server.port}/api/ws?access_token={token}",
        sock=sock,
        max_queue=1,
        max_size=None,
        open_timeout=10,
    )
    try:
        await stalled.send('{"type": "subscribe", "rooms": ["matches"]}')
        async with WSClient(server.url, token) as healthy:
            assert (await healthy.subscribe(["matches"]))["type"] == "subscribed"
            count = 600  # ~9 MB of critical events: far past the socket buffers and the budget
            blob = "x" * 15_000
            # The healthy client reads while the announcements are published.
            reading = asyncio.ensure_future(
                healthy.wait_for(
                    lambda evs: sum(e["event"] == "announcement" for e in evs) >= count,
                    timeout=60,
                )
            )
            await admin.announce_many("matches", [{"blob": blob, "n": n} for n in range(count)])
            events = await reading
            got = [e["data"]["n"] for e in events if e["event"] == "announcement"]
            assert got == list(range(count)), "the healthy client missed an event"
        # The stalled client reads again: what the socket held, then the close.
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(30):
                while True:
                    await stalled.recv()
        assert closed.value.rcvd is not None, "closed without a close frame"
        assert closed.value.rcvd.code == 4008, closed.value.rcvd
    finally:
        await stalled.close()


async def test_a_draining_instance_refuses_a_new_websocket_before_the_upgrade(
    live_servers: Callable[..., LiveServer],
) -> None:
    """PROTOCOL 3.7: from SIGTERM on, new streams are refused with 503 and Retry-After, on
    every transport: a WebSocket before the upgrade."""
    server = live_servers(env={"JWT_SECRET": SECRET, "DRAIN_SECONDS": "4"})
    token = server.token("viewer")
    # An open stream keeps the drain going (it is ended spread over DRAIN_SECONDS).
    async with SSEClient(server.url, "matches", token) as held:
        await held.wait_event("stream:open")
        assert server.process is not None
        os.killpg(server.process.pid, signal.SIGTERM)
        since = time.monotonic()
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            while (await http.get("/readyz")).status_code == 200:
                assert time.monotonic() - since < 2, "/readyz still 200 after SIGTERM"
        with pytest.raises(InvalidStatus) as refused:
            async with WSClient(server.url, token):
                pass
        response = refused.value.response
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) >= 1


async def test_the_write_rate_limit_holds_across_instances(
    live_servers: Callable[..., LiveServer], redis_url: str
) -> None:
    """PROTOCOL 3.6: writes are limited per token sub across the whole cluster: a caller
    that spent its burst on A is refused on B (429, Retry-After, RateLimit fields), and
    the refused request changes nothing."""
    env = {"REDIS_URL": redis_url, "JWT_SECRET": SECRET, "RATE_LIMIT_WRITES": "3"}
    a, b = live_servers(env=env), live_servers(env=env)
    sub = f"writer-{os.getpid()}-{time.monotonic_ns()}"  # its own bucket in the shared Redis
    headers = {"Authorization": f"Bearer {a.token(sub, 'matches:write')}"}
    async with httpx.AsyncClient(timeout=10) as http:
        # The burst is 3; a second refills one, so spend it quickly and look at the answers.
        answers = []
        for n in range(4):
            server = a if n < 3 else b
            answers.append(
                await http.post(
                    f"{server.url}/api/matches",
                    headers=headers,
                    json={"match_id": f"{sub}-{n}", "player_ids": [f"{sub}-x", f"{sub}-y"]},
                )
            )
        statuses = [r.status_code for r in answers]
        assert 429 in statuses, statuses
        refused = answers[statuses.index(429)]
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-policy"] == '"writes";q=3;w=1'
        assert refused.headers["ratelimit"].startswith('"writes";r=0;')
        # The refused match was not created, on either instance.
        refused_id = f"{sub}-{statuses.index(429)}"
        viewer = {"Authorization": f"Bearer {b.token('viewer')}"}
        for server in (a, b):
            missing = await http.get(f"{server.url}/api/matches/{refused_id}", headers=viewer)
            assert missing.status_code == 404, missing.text


async def test_sigterm_to_the_supervisor_of_workers_drains_every_worker(
    live_servers: Callable[..., LiveServer], redis_url: str
) -> None:
    """PROTOCOL 3.7 and 6 together: `serve --workers 2` gets SIGTERM at its main process
    only (what an orchestrator sends to PID 1). Every worker drains: open WebSockets
    closed with 1012, SSE streams ended with a retry hint and no stream:reset;
    everything has exited within DRAIN_SECONDS + 5 s."""
    drain = 2.0
    server = live_servers(
        env={"REDIS_URL": redis_url, "JWT_SECRET": SECRET, "DRAIN_SECONDS": str(drain)},
        args=("--workers", "2"),
    )
    token = server.token("viewer")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        auth = {"Authorization": f"Bearer {token}"}
        head = (await http.get("/api/poll", params={"rooms": ROOM}, headers=auth)).json()
    # Enough of each that both workers (the kernel spreads connections) hold some.
    clients = [Follower(t, token, head["cursor"]) for t in ("sse", "ws") for _ in range(8)]
    never = asyncio.Event()
    sessions = [asyncio.create_task(c.session(server.port, never)) for c in clients]
    deadline = time.monotonic() + 20
    while not all(c.opened.is_set() for c in clients):
        assert time.monotonic() < deadline, "streams did not open"
        await asyncio.sleep(0.05)
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGTERM)  # the supervisor alone, not the group
    since = time.monotonic()
    endings = await asyncio.wait_for(asyncio.gather(*sessions), drain + 5)
    for client, ending in zip(clients, endings, strict=True):
        if client.transport == "ws":
            assert (ending.kind, ending.close_code) == ("ws-close", 1012), ending
        else:
            assert ending.kind == "sse-eof" and ending.retry_ms is not None, ending
            assert not ending.reset, "a drained SSE stream got stream:reset"
    while server.process.poll() is None:
        assert time.monotonic() - since <= drain + 5, "still running after DRAIN_SECONDS + 5 s"
        await asyncio.sleep(0.05)


async def test_a_body_over_one_mebibyte_is_answered_413_not_reset(
    shared_servers: Callable[..., LiveServer],
) -> None:
    """PROTOCOL 7: a body over the limit is a 413 (1 MiB for any request). A client that
    sends 4 MiB in one go (no Expect: 100-continue, as most HTTP libraries do) must get
    that answer, every time."""
    server = shared_servers(env={"JWT_SECRET": SECRET})  # refusals only
    headers = {
        "Authorization": f"Bearer {server.token('writer', 'matches:write')}",
        "Content-Type": "application/json",
    }
    body = b"[" + b"0," * (2 * 1024 * 1024) + b"0]"
    answers: list[int | str] = []
    for _ in range(5):
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            try:
                answers.append(
                    (await http.post("/api/matches", headers=headers, content=body)).status_code
                )
            except httpx.TransportError as exc:
                answers.append(type(exc).__name__)
    assert answers == [413] * 5, answers


def _stalled_stream(server: LiveServer, token: str, transport: str) -> socket.socket:
    """A client that opens a stream and then stops reading (a phone gone to sleep): a tiny
    receive window, so the server's writes fill its socket."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    if transport == "sse":
        sock.sendall(
            f"GET /api/events?rooms={ROOM}&access_token={token} HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\n\r\n".encode()
        )
    else:
        sock.sendall(
            f"GET /api/ws?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        payload = b'{"type": "subscribe", "rooms": ["matches"]}'
        mask = b"\x01\x02\x03\x04"
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    return sock


async def test_clients_that_stopped_reading_do_not_hold_up_the_exit(
    live_servers: Callable[..., LiveServer],
) -> None:
    """PROTOCOL 3.7: the process exits within DRAIN_SECONDS + 5 s, also when some clients
    stopped reading and their sockets are full (the drain's last words cannot be sent)."""
    drain = 2.0
    # A send budget large enough that the stalled streams are not cut as slow first: at the
    # signal they hold megabytes the kernel would not take.
    budget = {"SEND_QUEUE_BYTES": str(64 << 20), "SEND_QUEUE_MAX": "10000"}
    server = live_servers(env={"JWT_SECRET": SECRET, "DRAIN_SECONDS": str(drain), **budget})
    admin = HttpApi(server.url, server.token("ops", "admin"))
    token = server.token("sleepy")
    stalled = [_stalled_stream(server, token, t) for t in ("sse", "ws", "sse", "ws")]
    try:
        async with SSEClient(server.url, ROOM, server.token("awake")) as awake:
            await awake.wait_event("stream:open")
            # ~9 MB: far beyond what the stalled sockets (and the kernel's buffers) take.
            count = 600
            await admin.announce_many(ROOM, [{"blob": "x" * 15_000, "n": n} for n in range(count)])
            await awake.wait_for(
                lambda evs: sum(e["event"] == "announcement" for e in evs) >= count, 30
            )
        took = await server.exit_time(server.sigterm(), drain + 5)
        print(f"exit {took:.2f} s after SIGTERM (DRAIN_SECONDS={drain:g})")
    finally:
        for sock in stalled:
            sock.close()


def _get(sock: socket.socket, wire: h11.Connection, target: str, token: str) -> None:
    """Send a GET over a keep-alive connection (h11 keeps the client side's state)."""
    if wire.our_state is h11.DONE:
        wire.start_next_cycle()
    headers = [("Host", "127.0.0.1"), ("Authorization", f"Bearer {token}")]
    sock.sendall(wire.send(h11.Request(method="GET", target=target, headers=headers)))
    sock.sendall(wire.send(h11.EndOfMessage()))


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes the connection (EOF) within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_draining_instance_sends_its_pollers_elsewhere(
    live_servers: Callable[..., LiveServer],
) -> None:
    """PROTOCOL 3.7: a pending long-poll answers at once, and the client resumes on another
    instance. A poller's next poll goes over its keep-alive connection, which still leads to
    the draining instance: so the answer (and a 503 to a new poll) must close the connection,
    else the poller is refused there (503) again and again until the instance exits."""
    server = live_servers(env={"JWT_SECRET": SECRET, "DRAIN_SECONDS": "6"})
    token = server.token("poller")
    held = _stalled_stream(server, token, "sse")  # an open stream: the drain takes its time
    pending, fresh = socket.socket(), socket.socket()
    try:
        pending.connect(("127.0.0.1", server.port))
        pending.settimeout(10)
        wire = h11.Connection(h11.CLIENT)
        _get(pending, wire, f"/api/poll?rooms={ROOM}", token)
        head, body = read_response(pending, wire)
        cursor = json.loads(body)["cursor"]
        _get(pending, wire, f"/api/poll?rooms={ROOM}&cursor={cursor}&timeout=20", token)
        fresh.connect(("127.0.0.1", server.port))
        fresh.settimeout(10)
        # The poll has reached the server (the lane counted it) before the drain begins.
        wait_until(
            lambda: lane_requests(server.url) == 2,
            10,
            "the pending poll taken by the server",
        )

        server.sigterm()
        head, body = read_response(pending, wire)
        assert head.status_code == 200 and json.loads(body)["events"] == []
        assert _closed_by_server(pending, 2), "the drained poll's connection was kept alive"

        fresh_wire = h11.Connection(h11.CLIENT)
        _get(fresh, fresh_wire, f"/api/poll?rooms={ROOM}&cursor={cursor}&timeout=20", token)
        refused, _ = read_response(fresh, fresh_wire)
        assert refused.status_code == 503
        assert dict(refused.headers)[b"retry-after"] == b"1"
        assert _closed_by_server(fresh, 2), "a refused poll's connection was kept alive"

        # A new SSE stream too (a reconnecting page reuses its keep-alive connections).
        stream = socket.create_connection(("127.0.0.1", server.port), 10)
        stream_wire = h11.Connection(h11.CLIENT)
        _get(stream, stream_wire, f"/api/events?rooms={ROOM}", token)
        refused, _ = read_response(stream, stream_wire)
        assert refused.status_code == 503
        assert _closed_by_server(stream, 2), "a refused stream's connection was kept alive"
        stream.close()
    finally:
        for sock in (held, pending, fresh):
            sock.close()


async def test_private_and_unknown_rooms_are_refused_on_resume_too(
    shared_servers: Callable[..., LiveServer],
) -> None:
    """PROTOCOL 1: an unknown room is a 400 and someone else's private room a 403, on every
    transport, and on resume too (a valid cursor does not open a room)."""
    server = shared_servers(env={"JWT_SECRET": SECRET})  # refusals only
    admin = HttpApi(server.url, server.token("ops", "admin"))
    token = server.token("ann")
    cursor = await admin.announce(ROOM, {"n": 0})  # a cursor this instance resumes from
    for rooms, status in (("player:bob", 403), ("nope", 400), ("leaderboard:top:0", 400)):
        async with SSEClient(server.url, rooms, token, last_event_id=cursor) as sse:
            assert sse.status == status, rooms
            assert sse.content_type == "application/problem+json"
        polled = await poll(server.url, rooms, token, cursor, timeout=0)
        assert polled.status_code == status, (rooms, polled.text)
        assert polled.headers["content-type"] == "application/problem+json"
        async with WSClient(server.url, token) as ws:
            answer = await ws.subscribe([rooms], cursor=cursor)
            assert (answer["type"], answer["status"]) == ("error", status), answer
            # The socket stays open: a good subscribe is still answered.
            assert (await ws.subscribe([ROOM], cursor=cursor))["type"] == "subscribed"
