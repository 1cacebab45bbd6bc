"""The load generator end to end: against real `rankpulse serve` processes (every client
connects and sees every event once, in order), and against a deliberately broken server
(the losses and duplicates are reported, and the exit status says so)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..helpers import SECRET
from ..services import LiveServer


def run_generator(out: Path, *args: str, timeout: float = 90) -> tuple[int, dict[str, Any], str]:
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "quart_app.loadtest",
            "--json",
            str(out),
            "--settle",
            "0.2",
            "--drain-timeout",
            "5",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    report = json.loads(out.read_text()) if out.exists() else {}
    return process.returncode, report, process.stdout + process.stderr


def assert_complete(report: dict[str, Any], wanted: dict[str, int], events: int) -> None:
    assert report["ok"], report["problems"]
    assert report["publish"]["accepted"] == events
    for kind, count in wanted.items():
        row = report["transports"][kind]
        assert row["connected"] == count, (kind, row["connect_failures"])
        assert row["held_end"] == count, (kind, row["ended"])
        assert row["expected"] == count * events
        assert row["delivered"] == count * events, kind
        assert (row["missing"], row["duplicated"], row["out_of_order"], row["unexpected"]) == (
            0,
            0,
            0,
            0,
        ), (kind, row["worst_client"])
        latency = row["latency_ms"]
        # Latency was measured on this transport, and no sampled event took a minute to arrive.
        assert latency["count"] > 0, (kind, latency)
        assert 0 <= latency["p50"] <= latency["p99"] <= latency["max"] < 60_000, (kind, latency)
    assert report["deliveries"]["delivered"] == sum(wanted.values()) * events


def test_burst_over_sse_poll_and_ws(live_server: LiveServer, tmp_path: Path) -> None:
    """Development mode (tokens from POST /api/dev/token), two generator processes."""
    assert live_server.process is not None
    code, report, output = run_generator(
        tmp_path / "burst.json",
        "--url",
        live_server.url,
        "--sse",
        "20",
        "--poll",
        "5",
        "--ws",
        "5",
        "--burst",
        "50",
        "--processes",
        "2",
        "--server-pid",
        str(live_server.process.pid),
    )
    assert code == 0, output
    assert_complete(report, {"sse": 20, "poll": 5, "ws": 5}, 50)
    assert report["processes"] == 2
    assert report["server"]["rss_kib_connected"] > 0
    assert "OK: every client connected" in output


def test_rate_with_minted_tokens_and_two_publishers(
    shared_servers: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = shared_servers(env={"JWT_SECRET": SECRET})  # counts what its clients got
    code, report, output = run_generator(
        tmp_path / "rate.json",
        "--url",
        server.url,
        "--jwt-secret",
        SECRET,
        "--sse",
        "10",
        "--ws",
        "3",
        "--poll",
        "2",
        "--rate",
        "60",
        "--duration",
        "1",
        "--publishers",
        "2",
        "--room",
        "leaderboard:global",
    )
    assert code == 0, output
    assert_complete(report, {"sse": 10, "ws": 3, "poll": 2}, 60)
    assert report["room"] == "leaderboard:global"
    assert report["publish"]["rate_achieved"] > 30


def test_refused_subscribers_are_reported(
    shared_servers: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = shared_servers(env={"JWT_SECRET": SECRET})  # refusals only
    code, report, _ = run_generator(
        tmp_path / "refused.json",
        "--url",
        server.url,
        "--token",
        "not-a-token",
        "--sse",
        "3",
        "--connect-timeout",
        "5",
    )
    assert code == 1
    assert report["transports"]["sse"]["connected"] == 0
    assert report["transports"]["sse"]["connect_failures"] == {"HTTP 401": 3}


# --- a server that loses and repeats events --------------------------------------------------
class LossyServer:
    """Just enough of the protocol (publish, SSE) to hand the first stream a gap (n=3 never
    sent) and a repeat (n=5 twice); the other streams get everything."""

    def __init__(self) -> None:
        self.streams: list[asyncio.StreamWriter] = []
        self.seq = 0
        self.handlers: set[asyncio.Task[None]] = set()  # one per connection, until it ends

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self.handlers.add(handler)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ")
                headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                if path.startswith("/api/events"):
                    await self.stream(writer)
                    return
                if method == "POST" and path == "/api/publish":
                    await self.publish(json.loads(body), writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def stream(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        self.send(writer, b"retry: 1000\n\n: ping\n\nid: x.0\nevent: stream:open\ndata: {}\n\n")
        self.streams.append(writer)
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    @staticmethod
    def send(writer: asyncio.StreamWriter, payload: bytes) -> None:
        writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))

    async def publish(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        self.seq += 1
        envelope = json.dumps(
            {
                "id": f"x.{self.seq}",
                "rooms": [body["room"]],
                "event": "announcement",
                "data": body["data"],
                "ts": 1,
            }
        )
        frame = f"id: x.{self.seq}\nevent: announcement\ndata: {envelope}\n\n".encode()
        n = body["data"]["n"]
        for index, stream in enumerate(self.streams):
            if index == 0 and n == 3:
                continue
            self.send(stream, frame * 2 if index == 0 and n == 5 else frame)
        answer = json.dumps({"id": f"x.{self.seq}"}).encode()
        writer.write(
            b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
        )


async def test_losses_and_repeats_are_reported(tmp_path: Path) -> None:
    lossy = LossyServer()
    server = await asyncio.start_server(lossy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    out = tmp_path / "lossy.json"
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "quart_app.loadtest",
            "--url",
            f"http://127.0.0.1:{port}",
            "--token",
            "t",
            "--sse",
            "4",
            "--burst",
            "10",
            "--json",
            str(out),
            "--settle",
            "0",
            "--drain-timeout",
            "1",
            "--connect-concurrency",
            "1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        for stream in lossy.streams:
            stream.close()
        server.close()
        await server.wait_closed()
        # (Python 3.11's wait_closed does not wait for them) the handlers close their sockets
        await asyncio.wait_for(asyncio.gather(*lossy.handlers), 10)
    assert process.returncode == 1, output.decode()
    row = json.loads(out.read_text())["transports"]["sse"]
    assert (row["missing"], row["duplicated"], row["out_of_order"]) == (1, 1, 0)
    assert (row["clients_missing"], row["clients_duplicated"]) == (1, 1)
    assert row["delivered"] == 4 * 10  # 9 + 11 + 10 + 10
    assert row["worst_client"]["client"] == "sse#0"
    assert b"PROBLEM: sse: 1 events missing" in output
