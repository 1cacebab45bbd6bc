"""LINGER_SECONDS (web/hypercorn_fast.py): how long the unread rest of an early-answered body
is read and discarded. A bad value stops `rankpulse serve` with a message naming it
(PROTOCOL 6), never a traceback nor an instance that would never close such a connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from quart_app.config import ConfigError
from quart_app.web.hypercorn_fast import DEFAULT_LINGER_SECONDS, linger_seconds

from ..test_cli import run_cli


def test_linger_defaults_to_two_seconds_and_takes_a_positive_number() -> None:
    assert linger_seconds({}) == DEFAULT_LINGER_SECONDS == 2.0
    assert linger_seconds({"LINGER_SECONDS": " "}) == 2.0
    assert linger_seconds({"LINGER_SECONDS": "0.5"}) == 0.5


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf"])
def test_a_bad_linger_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="LINGER_SECONDS"):
        linger_seconds({"LINGER_SECONDS": value})


def test_serve_stops_on_a_bad_linger_naming_it(tmp_path: Path) -> None:
    done = run_cli(["serve", "--port", "1"], {"LINGER_SECONDS": "forever"}, tmp_path)
    assert done.returncode != 0
    assert "LINGER_SECONDS" in done.stderr and "Traceback" not in done.stderr, done.stderr
