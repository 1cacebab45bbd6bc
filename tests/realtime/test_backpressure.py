"""Slow clients against a real `rankpulse serve` (PROTOCOL 3.5, issue 7 item 8): a raw socket
that stops reading, beside a control client that receives everything meanwhile.

- the byte budget cuts off a client stalled on big announcements, and the server's memory
  stays bounded;
- a lagging board watcher gets one `leaderboard:initial` with "conflated": true in place of
  the board state it skipped, and every critical event, in order, exactly once;
- a stalled client that reads again in a quiet period gets its whole backlog at the speed of
  its socket, not at the pace of the next push or heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import h11
import httpx

from ..clients import HttpApi, SSEClient, log_events
from ..services import LiveServer


class StalledSSE:
    """An SSE client on a raw socket with a tiny receive window: it reads the response head
    and `stream:open`, then nothing until told to; then it parses everything it gets."""

    def __init__(
        self, server: LiveServer, token: str, rooms: str, rcvbuf: int | None = 4096
    ) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:  # set before connecting: it fixes the window scale
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", server.port))
        self.http = h11.Connection(h11.CLIENT)
        self.sock.sendall(
            self.http.send(
                h11.Request(
                    method="GET",
                    target=f"/api/events?rooms={rooms}&access_token={token}",
                    headers=[("Host", "127.0.0.1")],
                )
            )
        )
        self.sock.sendall(self.http.send(h11.EndOfMessage()))
        self.body = bytearray()  # grown in place: the reader must not be the limit
        self.ended = False
        self.received = 0  # bytes off the socket
        self.longest_pause = 0.0  # between two reads that got bytes, while draining
        self._last_read: float | None = None

    def _pump(self, size: int = 1 << 20) -> bool:
        """Read once and parse; False at EOF or the end of the response."""
        if self.ended:
            return False
        try:
            data = self.sock.recv(size)
        except TimeoutError:
            return True
        self.received += len(data)
        now = time.monotonic()
        if data and self._last_read is not None:
            self.longest_pause = max(self.longest_pause, now - self._last_read)
        if data:
            self._last_read = now
        self.http.receive_data(data)
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self.ended = True
                return False
        if not data:
            self.ended = True
        return bool(data)

    def read_until(self, marker: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.body:
            assert time.monotonic() < deadline, f"no {marker!r} within {timeout} s"
            assert self._pump(), f"stream ended before {marker!r}"

    def drain(self, marker: bytes | None, timeout: float) -> float:
        """Read at full speed until `marker` arrived (None: until the end); returns the
        seconds taken. Only the new bytes are searched: the reader must not be the limit."""
        self.sock.settimeout(1)
        started, self._last_read = time.monotonic(), None
        while time.monotonic() - started < timeout:
            seen = len(self.body)
            if not self._pump() and self.ended:
                break
            if marker is not None and marker in self.body[max(0, seen - len(marker)) :]:
                break
        return time.monotonic() - started

    def envelopes(self) -> list[dict[str, Any]]:
        """The complete frames so far (the last one may still be arriving)."""
        return [
            json.loads(line[6:])
            for frame in self.body.split(b"\n\n")[:-1]
            for line in frame.split(b"\n")
            if line.startswith(b"data: ")
        ]

    def close(self) -> None:
        self.sock.close()


def _announcements(envelopes: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["n"] for e in envelopes if e["event"] == "announcement"]


async def test_the_byte_budget_cuts_off_a_client_stalled_on_big_announcements(live_servers) -> None:  # type: ignore[no-untyped-def]
    # The default event budget (2,000) never trips on 1,500 events: only the byte budget can.
    server = live_servers(env={"EVENT_LOG_SIZE": "100"})
    admin = HttpApi(server.url, server.token("ops", "admin"))
    token = server.token("viewer")
    stalled = await asyncio.to_thread(StalledSSE, server, token, "matches")
    await asyncio.to_thread(stalled.read_until, b"stream:open", 10)
    blob = "x" * 15_000
    count = 1500  # ~22 MB to the stalled client
    async with SSEClient(server.url, "matches", token) as control:
        await control.wait_event("stream:open")
        rss_before = server.rss_kb()
        await admin.announce_many("matches", [{"blob": blob, "n": n} for n in range(count)])
        events = await control.wait_for(lambda evs: len(log_events(evs)) >= count, timeout=60)
        assert [e["data"]["n"] for e in log_events(events)] == list(range(count))
        rss_growth_mb = (server.rss_kb() - rss_before) / 1024
    # Its socket drains to the slow hint, then EOF: it was cut off, not left to hold ~22 MB.
    took = await asyncio.to_thread(stalled.drain, None, 30)
    stalled.close()
    assert stalled.ended, f"the stalled client was never cut off ({took:.1f} s of reading)"
    last = stalled.envelopes()[-1]
    assert (last["event"], last["data"]) == ("stream:reset", {"reason": "slow"})
    received = _announcements(stalled.envelopes())
    assert received == list(range(len(received)))  # what it got before the cut: in order
    assert rss_growth_mb < 12, f"server memory grew {rss_growth_mb:.1f} MB"


async def test_a_lagging_board_watcher_gets_a_conflated_snapshot_and_every_critical_event(
    live_servers,  # type: ignore[no-untyped-def]
) -> None:
    server = live_servers(env={"SEND_QUEUE_BYTES": "262144"})
    writer = HttpApi(server.url, server.token("ops", "matches:write admin"))
    for n in range(50):  # 100 players: each board snapshot is ~12 KB
        await writer.play(f"a{n:02}", f"b{n:02}", f"a{n:02}")
    token = server.token("watcher")
    rooms = "matches,leaderboard:global"
    stalled = await asyncio.to_thread(StalledSSE, server, token, rooms, None)
    await asyncio.to_thread(stalled.read_until, b"stream:open", 10)
    connection_id = stalled.envelopes()[0]["data"]["connection_id"]
    body = {"connection_id": connection_id, "rooms": ["leaderboard:global"]}
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        SSEClient(server.url, rooms, token) as control,
        httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as watcher,
    ):
        await control.wait_event("leaderboard:initial")
        # ~3 MB of announcements fill the kernel's buffers (the server's send buffer grows to
        # 4 MB); then board state piles up on the stalled stream: a fresh leaderboard:initial
        # per join (~11 KB each, ~3 MB in all), with results (critical events) in between.
        await writer.announce_many("matches", [{"blob": "z" * 15_000} for _ in range(200)])
        results = 0
        for round_ in range(280):
            for action in ("unsubscribe", "subscribe"):
                answer = await watcher.post(f"/api/{action}", json=body)
                assert answer.status_code == 200, answer.text
            if round_ % 10 == 0:
                await writer.play(f"a{results:02}", f"c{results:02}", f"c{results:02}")
                results += 1
        # A marker: once the control client has it, everything before it was published.
        marker = await writer.announce("matches", {"last": True})
        await control.wait_for(lambda evs: any(e["id"] == marker for e in evs), timeout=30)
        expected = [(e["id"], e["event"]) for e in log_events(control.events)]
    took = await asyncio.to_thread(stalled.drain, f"id: {marker}\n".encode(), 60)
    stalled.close()
    envelopes = stalled.envelopes()
    assert any(e["id"] == marker for e in envelopes), f"backlog incomplete after {took:.1f} s"
    assert not any(e["event"] == "stream:reset" for e in envelopes), "cut off as slow"
    conflated = [
        e for e in envelopes if e["event"] == "leaderboard:initial" and e["data"].get("conflated")
    ]
    assert conflated, "no conflated snapshot"
    assert len(conflated[0]["data"]["entries"]) == 100
    # Critical events: all present, in order, once; log events never repeat or go back.
    critical = [
        (e["id"], e["event"]) for e in log_events(envelopes) if e["event"].startswith("match:")
    ]
    assert critical == [pair for pair in expected if pair[1].startswith("match:")]
    seqs = [int(e["id"].rpartition(".")[2]) for e in log_events(envelopes)]
    assert seqs == sorted(set(seqs))

    # After the last conflated snapshot, the board updates after its position all follow.
    def seq(cursor: str) -> int:
        return int(cursor.rpartition(".")[2])

    position = seq(conflated[-1]["id"])
    updates_after = [
        e["id"]
        for e in log_events(envelopes)
        if e["event"] == "leaderboard:update" and seq(e["id"]) > position
    ]
    assert updates_after == [
        cursor
        for cursor, name in expected
        if name == "leaderboard:update" and seq(cursor) > position
    ]


async def test_a_stalled_client_gets_its_backlog_at_the_speed_of_its_socket(live_servers) -> None:  # type: ignore[no-untyped-def]
    server = live_servers(env={"SEND_QUEUE_BYTES": "33554432", "SEND_QUEUE_MAX": "100000"})
    admin = HttpApi(server.url, server.token("ops", "admin"))
    token = server.token("viewer")
    # An ordinary receive window: a 4 KB one would itself limit the reading to ~200 KB/s.
    stalled = await asyncio.to_thread(StalledSSE, server, token, "matches", None)
    await asyncio.to_thread(stalled.read_until, b"stream:open", 10)
    blob = "y" * 15_000
    count = 1500  # ~22 MB: past the kernel's buffers and the transport's mark
    async with SSEClient(server.url, "matches", token) as control:
        await control.wait_event("stream:open")
        await admin.announce_many("matches", [{"blob": blob, "n": n} for n in range(count)])
        await control.wait_for(lambda evs: len(log_events(evs)) >= count, timeout=60)
    # A quiet period: no pushes from here on. The whole backlog must come within seconds.
    last = f'"n":{count - 1}}}'.encode()  # the last announcement's data ends so
    took = await asyncio.to_thread(stalled.drain, last, 30)
    stalled.close()
    got = _announcements(stalled.envelopes())
    assert got == list(range(count)), f"{len(got)} of {count} in {took:.1f} s"
    assert took < 5, (
        f"{stalled.received / 1e6:.1f} MB took {took:.1f} s "
        f"(longest pause {stalled.longest_pause:.2f} s)"
    )
