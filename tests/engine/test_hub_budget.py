"""The send budget of PROTOCOL 3.5 inside the hub (memory engine, a socket sink that the test
congests and drains at will): bytes as well as events, board state conflated into one
snapshot at the position reached, critical events never dropped, writing resumed on drain."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from quart_app.config import ConfigError, load_settings
from quart_app.engine.base import Draft, Event, Publication
from quart_app.engine.hub import Connection, Hub

BOARD = "leaderboard:global"


class Socket:
    """A sink whose congestion the test decides; `drained()` plays the transport resuming."""

    def __init__(self) -> None:
        self.written: list[Event] = []
        self.full = False
        self.on_drain: Callable[[], None] | None = None

    def write(self, batch: list[Event]) -> None:
        self.written += batch

    def closing(self) -> bool:
        return False

    def congested(self) -> bool:
        return self.full

    def when_drained(self, callback: Callable[[], None]) -> None:
        self.on_drain = callback

    def cancel(self) -> None:
        self.on_drain = None

    def drained(self) -> None:
        self.full = False
        callback, self.on_drain = self.on_drain, None
        assert callback is not None, "the hub did not ask to hear of the drain"
        callback()

    def envelopes(self) -> list[dict[str, Any]]:
        return [json.loads(event.text) for event in self.written if event.text]


async def emit(hub: Hub, room: str, name: str, **data: Any) -> None:
    await hub.engine.publish(Publication(events=(Draft((room,), name, data),)))


async def settle() -> None:
    for _ in range(20):  # flushes and the conflation task run on the next loop iterations
        await asyncio.sleep(0)


async def stalled(hub: Hub, rooms: list[str]) -> tuple[Connection, Socket]:
    conn, sock = hub.open("viewer", rooms, None), Socket()
    conn.attach(sock)
    sock.full = True
    return conn, sock


async def test_the_byte_budget_ends_a_client_stalled_on_big_critical_events(hub: Hub) -> None:
    conn, sock = await stalled(hub, ["matches"])
    for n in range(5):  # 5 x 5 KB: far below 1,000 events, past 20,000 bytes
        await emit(hub, "matches", "announcement", n=n, blob="x" * 5000)
    await settle()
    assert conn.closed == "slow"
    assert sock.written == []


async def test_board_state_is_conflated_and_critical_events_keep_their_order(hub: Hub) -> None:
    conn, sock = await stalled(hub, [BOARD, "matches"])
    for n in range(30):  # ~1 KB board updates, with a critical event every third one
        await emit(hub, BOARD, "leaderboard:update", n=n, blob="u" * 1000)
        if n % 3 == 0:
            await emit(hub, "matches", "match:result", n=n)
    await settle()
    assert conn.closed is None
    position = hub.head_seq
    await emit(hub, BOARD, "leaderboard:update", n=99)  # after the conflated snapshot
    await emit(hub, "matches", "match:result", n=99)
    sock.drained()
    await settle()
    sent = sock.envelopes()
    names = [e["event"] for e in sent]
    assert names.count("leaderboard:initial") == 1
    snapshot = next(e for e in sent if e["event"] == "leaderboard:initial")
    assert snapshot["data"]["conflated"] is True
    # Every critical event, in order; board updates only after the snapshot's position.
    assert [e["data"]["n"] for e in sent if e["event"] == "match:result"] == [
        *range(0, 30, 3),
        99,
    ]
    at = names.index("leaderboard:initial")
    snapshot_seq = int(snapshot["id"].rpartition(".")[2])
    assert all(int(e["id"].rpartition(".")[2]) > snapshot_seq for e in sent[at + 1 :])
    assert all(int(e["id"].rpartition(".")[2]) <= snapshot_seq for e in sent[:at])
    assert snapshot_seq <= position
    assert [e["data"]["n"] for e in sent[at + 1 :] if e["event"] == "leaderboard:update"] == [99]
    assert conn.last_seq == hub.head_seq


async def test_last_seq_reflects_the_conflated_snapshot(hub: Hub) -> None:
    conn, sock = await stalled(hub, [BOARD])
    for n in range(30):
        await emit(hub, BOARD, "leaderboard:update", n=n, blob="u" * 1000)
    await settle()
    sock.drained()
    await settle()
    assert [e["event"] for e in sock.envelopes()] == ["leaderboard:initial"]
    # A client resuming from the stream's position misses nothing and repeats nothing.
    assert conn.last_seq == hub.head_seq == 30


async def test_a_long_poll_is_never_conflated(hub: Hub) -> None:
    conn = hub.open("viewer", [BOARD], None, after_seq=hub.head_seq)
    conn.conflate = False
    for n in range(30):
        await emit(hub, BOARD, "leaderboard:update", n=n, blob="u" * 1000)
    assert conn.closed == "slow"


async def test_a_drained_socket_gets_the_backlog_without_a_push_or_tick(hub: Hub) -> None:
    conn, sock = await stalled(hub, ["matches"])
    for n in range(10):
        await emit(hub, "matches", "announcement", n=n)
    await settle()
    assert sock.written == [] and sock.on_drain is not None
    sock.drained()  # no new event, no tick: only the drain
    await settle()
    assert [e["data"]["n"] for e in sock.envelopes()] == list(range(10))


@pytest.mark.parametrize("value", ["0", "-1", "100", "lots"])
def test_send_queue_bytes_refuses_bad_values_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="SEND_QUEUE_BYTES"):
        load_settings(send_queue_bytes=value)


@pytest.mark.usefixtures("clean_env")
def test_send_queue_bytes_defaults_to_one_mebibyte() -> None:
    assert load_settings().send_queue_bytes == 1_048_576
