"""Dead-peer bounds set once on the listening socket (web/dead_peers.py bound_listener): every
socket accepted there carries them, so no stream, poll or request sets them itself."""

from __future__ import annotations

import socket

import pytest

from quart_app.web import dead_peers


@pytest.fixture(autouse=True)
def _process_state_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dead_peers, "_listeners_bound", 0.0)  # (what this process's listeners did)


OPTIONS = {
    "user_timeout": (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    "keepalive": (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "idle": (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    "probes": (socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
}


def _accepted_options(user_timeout: float) -> dict[str, int]:
    """The options of a socket accepted on a listener bound with `user_timeout`."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        dead_peers.bound_listener(listener, user_timeout)
        listener.listen()
        client = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, _ = listener.accept()
        with client, accepted:
            return {name: accepted.getsockopt(*option) for name, option in OPTIONS.items()}


def test_a_bound_listener_gives_its_accepted_sockets_the_dead_peer_options() -> None:
    options = _accepted_options(8)
    assert options == {"user_timeout": 8000, "keepalive": 1, "idle": 4, "probes": 3}


def test_zero_leaves_the_kernels_defaults() -> None:
    options = _accepted_options(0)
    assert options["user_timeout"] == 0 and options["keepalive"] == 0
