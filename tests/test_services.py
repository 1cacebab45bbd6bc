"""The fixtures that start real services: a test that restarts Redis on its port must be talking
to its own server afterwards, never to whatever else took the port while it was down."""

from __future__ import annotations

import socket
import subprocess

import pytest

from .services import RedisClusterSet, RedisServer, SentinelSet, free_port, redis_command


def _ephemeral_range() -> range:
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as bounds:
        low, high = (int(n) for n in bounds.read().split())
    return range(low, high + 1)


def test_free_ports_are_outside_the_range_the_kernel_hands_out_on_its_own() -> None:
    """An outgoing connection anywhere on the machine takes its local port from the ephemeral
    range, and so does every bind to port 0: a server stopped for a restart must not find its
    port taken by one of those when it comes back."""
    ports = [free_port() for _ in range(200)]
    assert not set(ports) & set(_ephemeral_range())
    assert len(set(ports)) == len(ports), "a port handed out twice: two servers would share it"


def test_a_restart_whose_port_was_taken_meanwhile_fails_instead_of_using_a_stranger() -> None:
    server = RedisServer()
    server.start()
    try:
        server.stop()
        with socket.socket() as stranger:
            stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            stranger.bind(("127.0.0.1", server.port))
            stranger.listen()
            with pytest.raises(RuntimeError, match="did not start"):
                server.start()
    finally:
        server.kill()


def test_a_restarted_server_answers_as_itself() -> None:
    server = RedisServer()
    server.start()
    try:
        server.stop()
        server.start()
        info = str(redis_command(server.port, "INFO", "server"))
        assert f"process_id:{server.process.pid}" in info  # type: ignore[union-attr]
    finally:
        server.kill()


def test_cluster_nodes_keep_their_bus_port_out_of_the_ephemeral_range_too() -> None:
    """A cluster node listens on its port and on its bus port, port + 10000."""
    ports = [RedisClusterSet._free_node_port() for _ in range(30)]
    bus_ports = [port + 10000 for port in ports]
    assert not set(bus_ports) & set(_ephemeral_range())
    assert len(set(ports + bus_ports)) == 60
    assert not set(bus_ports) & {free_port() for _ in range(200)}


def test_a_sentinel_set_that_fails_to_start_leaves_nothing_running() -> None:
    """A fixture whose set-up fails never reaches its stop(): processes started before the
    failure (the master here) would outlive the test, holding their ports."""
    sentinels = SentinelSet()
    with socket.socket() as stranger:
        stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        stranger.bind(("127.0.0.1", sentinels.replica_port))
        stranger.listen()
        with pytest.raises((RuntimeError, TimeoutError, subprocess.CalledProcessError)):
            sentinels.start()
    started = [sentinels.master.process, *sentinels.processes]
    assert all(p is None or p.poll() is not None for p in started)
