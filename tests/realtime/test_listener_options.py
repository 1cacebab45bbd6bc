"""Dead-peer bounds set once on the listening socket (web/dead_peers.py bound_listener): every
socket accepted there carries them, so no stream, poll or request sets them itself."""

from __future__ import annotations

import socket

import pytest

from quart_app.web import dead_peers


@pytest.fixture(autouse=True)
def _process_state_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dead_peers, "_listeners_bound", 0.0)  # (what this process's listeners did)


def _accepted(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = socket.create_connection(listener.getsockname(), timeout=5)
    accepted, _ = listener.accept()
    return client, accepted


def test_a_bound_listener_gives_its_accepted_sockets_the_dead_peer_options() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        dead_peers.bound_listener(listener, 8)
        listener.listen()
        client, accepted = _accepted(listener)
        with client, accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 8000
            assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 4
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3


def test_zero_leaves_the_kernels_defaults() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        dead_peers.bound_listener(listener, 0)
        listener.listen()
        client, accepted = _accepted(listener)
        with client, accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 0
            assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
