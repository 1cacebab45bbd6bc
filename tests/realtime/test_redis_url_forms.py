"""PROTOCOL 6: the single-Redis forms of REDIS_URL, `unix://` and `rediss://` (TLS), each
against a real redis-server and a real instance. (`redis://` is what every other Redis test
uses; Sentinel and Cluster have their own files.) What a user notices: the instance is ready,
and an announcement published through it reaches a long-poller through that Redis."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..clients import HttpApi, poll, poll_until
from ..services import LiveServer, free_port, port_open, require_tool, wait_until

SECRET = "redis-url-forms-secret-0123456789"


class ExtraRedis:
    """A throwaway redis-server listening only where the test says (a unix socket, a TLS
    port): RedisServer in services.py knows plain TCP only."""

    def __init__(self, args: list[str], ready: Callable[[], bool], workdir: str) -> None:
        self.workdir = workdir
        self.process = subprocess.Popen(
            [
                require_tool("redis-server"),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--loglevel",
                "warning",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(ready, 10, f"redis-server {' '.join(args)}")

    def cli(self, *args: str) -> str:
        out = subprocess.run([require_tool("redis-cli"), *args], capture_output=True, check=True)
        return out.stdout.decode().strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture(name="workdir")
def _workdir() -> Iterator[str]:
    # A short path: a unix socket's path is limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="lrp-url-") as path:
        yield path


def _write_pem(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _tls_files(workdir: str) -> tuple[str, str, str]:
    """A CA, and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rankpulse test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = Path(workdir)
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return (
        _write_pem(folder / "ca.pem", ca.public_bytes(pem)),
        _write_pem(folder / "server.pem", cert.public_bytes(pem)),
        _write_pem(folder / "server.key", key_pem),
    )


async def _announcement_flows_through(server: LiveServer) -> None:
    admin = HttpApi(server.url, server.token("ops", "admin"))
    viewer = server.token("viewer")
    ready = await poll(server.url, "matches", viewer, timeout=0)
    assert ready.status_code == 200, ready.text
    start = ready.json()["cursor"]
    await admin.announce("matches", {"n": 1})
    got, _ = await poll_until(server.url, "matches", viewer, start, lambda evs: len(evs) >= 1)
    assert [(e["event"], e["data"]) for e in got] == [("announcement", {"n": 1})]


async def test_unix_socket_url(live_servers: Callable[..., LiveServer], workdir: str) -> None:
    socket = os.path.join(workdir, "redis.sock")
    redis = ExtraRedis(
        ["--port", "0", "--unixsocket", socket, "--unixsocketperm", "700"],
        lambda: os.path.exists(socket),
        workdir,
    )
    try:
        server = live_servers(env={"REDIS_URL": f"unix://{socket}", "JWT_SECRET": SECRET})
        await _announcement_flows_through(server)
        # Through that Redis, not beside it: the log is there.
        assert int(redis.cli("-s", socket, "DBSIZE")) > 0
    finally:
        redis.stop()


async def test_tls_url(live_servers: Callable[..., LiveServer], workdir: str) -> None:
    ca, cert, key = _tls_files(workdir)
    port = free_port()
    redis = ExtraRedis(
        [
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--tls-ca-cert-file",
            ca,
            "--tls-auth-clients",
            "no",
        ],
        lambda: port_open(port),
        workdir,
    )
    try:
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
        server = live_servers(env={"REDIS_URL": url, "JWT_SECRET": SECRET})
        await _announcement_flows_through(server)
        tls = ["--tls", "--cacert", ca, "-h", "127.0.0.1", "-p", str(port)]
        assert int(redis.cli(*tls, "DBSIZE")) > 0
    finally:
        redis.stop()
