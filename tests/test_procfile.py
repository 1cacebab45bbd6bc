"""PROTOCOL 6: "The `web` line of the `Procfile` starts one instance with Hypercorn and binds
0.0.0.0:$PORT", and with nothing else configured it runs on the embedded default: the
in-process engine and a SQLite file in the working directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from .conftest import ENV_VARS
from .services import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _web_command() -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        kind, _, command = line.partition(":")
        if kind.strip() == "web":
            return command.strip()
    raise AssertionError("the Procfile has no web line")


def _listening_on_any_address(port: int) -> bool:
    """A listening IPv4 socket on 0.0.0.0:port (from /proc/net/tcp: state 0A is LISTEN)."""
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return any(row[1] == f"00000000:{port:04X}" and row[3] == "0A" for row in rows)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def test_the_web_line_serves_on_all_addresses_at_port(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k.upper() not in ENV_VARS}
    env["PORT"] = str(port)
    # The venv's scripts first, as on a platform that installed the package.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    process = subprocess.Popen(
        _web_command(),
        shell=True,  # a Procfile line is a shell command ($PORT)
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: _healthy(port), 30, f"the Procfile's web process on {port}")
        assert _listening_on_any_address(port), "not bound to 0.0.0.0"
        assert (tmp_path / "rankpulse.db").exists(), "no SQLite file in the working directory"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
