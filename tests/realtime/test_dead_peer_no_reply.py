"""PROTOCOL 3.6: an SSE peer whose host is gone without any reply is found within 60 s.

The other dead-peer tests (test_dead_peers.py) have the peer's kernel answer the heartbeat with
a RST, or a proxy that keeps the TCP connection alive. Here the client runs in a network
namespace joined to ours by a veth pair, and its link goes down: the server's heartbeat is
never acknowledged, nothing is refused, nothing arrives. Only TCP_USER_TIMEOUT
(TCP_USER_TIMEOUT_SECONDS) ends that socket: without it Linux retransmits for about 15 minutes.
Needs `ip` (iproute2; scripts/test installs it) and root, as the suite's other fault tests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from quart_app.loadtest.wire import Target, request

from ..services import LiveServer, require_tool
from .test_dead_peers import FAST, Scraper

# Runs inside the namespace: open the stream, say so, then hold the socket without a word.
_CLIENT = """
import socket, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
sock.sendall(bytes.fromhex(sys.argv[3]))
seen = b""
while b"stream:open" not in seen:
    data = sock.recv(65536)
    if not data:
        sys.exit("closed before stream:open: %r" % seen)
    seen += data
print("open", flush=True)
sys.stdin.read()
"""


@dataclass
class Namespace:
    name: str
    link: str  # the namespace's end of the veth pair
    server_ip: str
    client_ip: str

    def run(self, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.name, *args], check=True)


@pytest.fixture(name="netns")
def _netns() -> Iterator[Namespace]:
    ip = require_tool("ip")
    pid = os.getpid()  # one namespace per test process (xdist workers run side by side)
    subnet = f"10.{100 + pid // 250 % 100}.{pid % 250}"
    ns = Namespace(f"lrp-peer-{pid}", f"lrpb{pid}", f"{subnet}.1", f"{subnet}.2")
    outer = f"lrpa{os.getpid()}"

    def sh(*args: str) -> None:
        subprocess.run([ip, *args], check=True, capture_output=True)

    sh("netns", "add", ns.name)
    try:
        sh("link", "add", outer, "type", "veth", "peer", "name", ns.link)
        sh("link", "set", ns.link, "netns", ns.name)
        sh("addr", "add", f"{ns.server_ip}/30", "dev", outer)
        sh("link", "set", outer, "up")
        for args in (
            ("addr", "add", f"{ns.client_ip}/30", "dev", ns.link),
            ("link", "set", ns.link, "up"),
            ("link", "set", "lo", "up"),
        ):
            sh("netns", "exec", ns.name, ip, *args)
        yield ns
    finally:
        subprocess.run([ip, "link", "del", outer], capture_output=True)
        subprocess.run([ip, "netns", "del", ns.name], capture_output=True)


@pytest.fixture(name="server")
def _server(live_servers: Callable[..., LiveServer]) -> LiveServer:
    return live_servers(env=FAST, args=("--host", "0.0.0.0"))


async def test_sse_peer_whose_host_went_silent_is_dropped(
    server: LiveServer, netns: Namespace
) -> None:
    scraper = Scraper(server)
    target = Target("http", netns.server_ip, server.port, "")
    head = request(
        "GET", target, "/api/events?rooms=matches", {"Authorization": f"Bearer {server.token('v')}"}
    )
    client = subprocess.Popen(
        ["ip", "netns", "exec", netns.name, sys.executable, "-c", _CLIENT]
        + [netns.server_ip, str(server.port), head.hex()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert client.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(client.stdout.readline), 20)
        assert line == b"open\n", "the client in the namespace did not get its stream"
        await scraper.until("rankpulse_connections", lambda v: v == 1, 10)

        netns.run("ip", "link", "set", "dev", netns.link, "down")  # gone: no FIN, no RST, no ACK
        took = await scraper.until("rankpulse_connections", lambda v: v == 0, 40)
        # the next heartbeat (2 s) goes unacknowledged for TCP_USER_TIMEOUT_SECONDS (5 s)
        assert took <= 2 + 5 + 4
    finally:
        client.kill()
        client.communicate(timeout=10)  # reaps it and closes its pipes
        await scraper.client.aclose()
