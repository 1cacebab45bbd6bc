"""Configuration: the environment is read with typed casts, and a bad value stops the start with
a message that names the variable."""

from __future__ import annotations

import pytest

from quart_app.config import ConfigError, load_settings


def test_defaults(clean_env: None) -> None:
    settings = load_settings()
    assert settings.port == 8000
    assert settings.redis_url is None  # the in-process engine
    assert settings.database_url.startswith("sqlite:///")
    assert settings.algorithms == ["HS256"]
    assert settings.dev_mode
    assert settings.elo_k == 32 and settings.initial_rating == 1200


def test_the_environment_is_read(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "PORT": "9001",
        "REDIS_URL": "redis://cache:6379/2",
        "PUBLIC_READ": "true",
        "DATABASE_URL": "postgres://u@db/pulse",
        "JWT_SECRET": "s" * 32,
        "JWT_ALGORITHMS": "HS256, HS512",
        "CORS_ORIGINS": "https://a.example/, https://b.example",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.port == 9001
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.public_read is True
    assert settings.database_url == "postgresql://u@db/pulse"
    assert settings.algorithms == ["HS256", "HS512"]
    assert settings.cors_origin_list == ["https://a.example", "https://b.example"]
    assert not settings.dev_mode
    # an empty REDIS_URL means "unset", as in a Procfile environment
    monkeypatch.setenv("REDIS_URL", "")
    assert load_settings().redis_url is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "0"),
        ("PORT", "70000"),
        ("REDIS_URL", "http://x"),
        ("DATABASE_URL", "mysql://db/x"),
        ("DATABASE_URL", "sqlite:///:memory:"),
        ("JWT_ALGORITHMS", "none"),
        ("JWT_ALGORITHMS", "HS256,none"),
        ("JWT_ALGORITHMS", " , "),
        ("PUBLIC_READ", "perhaps"),
        ("ELO_K", "0"),
        ("LOG_LEVEL", "loud"),
        ("HEARTBEAT_SECONDS", "60"),
        ("SEND_QUEUE_MAX", "many"),
    ],
)
def test_a_bad_value_is_refused_by_name(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=rf"\b{name}\b"):
        load_settings()


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"JWT_ALGORITHMS": "RS256"}, "JWT_ALGORITHMS"),
    ],
)
def test_inconsistent_settings_are_refused_by_name(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], name: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=rf"\b{name}\b"):
        load_settings()


def test_overrides_are_checked_too(clean_env: None) -> None:
    with pytest.raises(ConfigError, match=r"\bPORT\b"):
        load_settings(port="abc")
    with pytest.raises(ConfigError, match=r"\bREDIS_URL\b"):
        load_settings(redis_url="http://x")


def test_every_bad_variable_is_named_at_once(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "abc")
    monkeypatch.setenv("REDIS_URL", "http://x")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "PORT" in str(caught.value) and "REDIS_URL" in str(caught.value)
