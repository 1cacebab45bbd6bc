"""PROTOCOL 6: "A bad value stops the start with a message that names it", for the values
whose form only a parser can check: the REDIS_URL forms (a port, a socket path, a db number)
and the JWT key settings. Each used to pass the configuration check and then either stop
the start with a traceback that named no variable, or start an instance that could never
work. The good forms must still pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from quart_app.config import ConfigError, load_settings

from .test_cli import run_cli


@pytest.mark.parametrize(
    "value",
    [
        "redis://cache:badport/0",
        "redis://cache:70000",
        "rediss://cache:0/0",
        "redis://cache:6379/abc",
        "unix://",
        "unix:///tmp/redis.sock?db=abc",
    ],
)
def test_a_bad_redis_url_is_refused_by_name(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("REDIS_URL", value)
    with pytest.raises(ConfigError, match=r"\bREDIS_URL\b"):
        load_settings()


@pytest.mark.parametrize(
    "value",
    [
        "redis://cache",
        "redis://user:p%40ss@cache:6379/2",
        "rediss://cache:6380/0?ssl_ca_certs=/etc/ca.pem",
        "unix:///run/redis/redis.sock",
        "unix:///run/redis/redis.sock?db=3",
        "redis+sentinel://user:pw@s1:26379,s2:26379/mymaster/1",
        "redis+cluster://n1:7000,n2:7001",
    ],
)
def test_the_redis_url_forms_pass(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("REDIS_URL", value)
    assert load_settings().redis_url == value


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"JWT_ALGORITHMS": "RS256", "JWT_PUBLIC_KEY": "not a key"}, "JWT_PUBLIC_KEY"),
        ({"JWT_ALGORITHMS": "RS256", "JWT_JWKS_URL": "keys.example/jwks"}, "JWT_JWKS_URL"),
        ({"JWT_ALGORITHMS": "RS256", "JWT_JWKS_URL": "ftp://keys.example/jwks"}, "JWT_JWKS_URL"),
    ],
)
def test_a_bad_jwt_key_setting_is_refused_by_name(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], name: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=rf"\b{name}\b"):
        load_settings()


def test_a_good_public_key_and_jwks_url_pass(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    public = rsa.generate_private_key(65537, 2048).public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    monkeypatch.setenv("JWT_ALGORITHMS", "RS256")
    monkeypatch.setenv("JWT_PUBLIC_KEY", pem)
    assert load_settings().jwt_public_key == pem
    monkeypatch.delenv("JWT_PUBLIC_KEY")
    monkeypatch.setenv("JWT_JWKS_URL", "https://idp.example/.well-known/jwks.json")
    assert load_settings().jwt_jwks_url == "https://idp.example/.well-known/jwks.json"


@pytest.mark.parametrize(
    ("name", "value"),
    [("REDIS_URL", "redis://127.0.0.1:badport"), ("JWT_PUBLIC_KEY", "not a key")],
)
def test_serve_stops_in_one_line_naming_the_variable(tmp_path: Path, name: str, value: str) -> None:
    env = {name: value}
    if name == "JWT_PUBLIC_KEY":
        env["JWT_ALGORITHMS"] = "RS256"
    done = run_cli(["serve", "--port", "1"], env, tmp_path)  # (never bound: refused first)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.startswith("rankpulse: invalid configuration")
    assert name in done.stderr
