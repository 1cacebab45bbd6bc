"""Settings from the environment, refused by name when a value is bad."""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(Exception):
    """A configuration value is unusable; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    port: int = Field(8000, ge=1, le=65535)
    # Unset: the in-process engine (one instance). Set: the Redis engine (any number of instances).
    redis_url: str | None = None
    # Every Redis key of this service starts with this, so one Redis can host several deployments.
    redis_prefix: str = "lrp:"
    database_url: str = "sqlite:///./rankpulse.db"
    # Upgrade the schema (Alembic) at start, under a lock so instances starting together wait
    # for each other. false: the operator runs `rankpulse migrate`; an instance then waits
    # (/readyz 503) until the database is at this release's revision.
    migrate_on_start: bool = True

    jwt_secret: str | None = None
    jwt_algorithms: str = "HS256"
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # Seconds of clock skew tolerated on exp/nbf/iat.
    jwt_leeway: int = Field(0, ge=0, le=300)

    cors_origins: str | None = None
    public_read: bool = False

    elo_k: float = Field(32.0, gt=0, le=400)
    initial_rating: float = Field(1200.0, ge=0, le=10000)

    # How many events the log keeps for resume (older cursors get stream:reset "expired").
    event_log_size: int = Field(10_000, ge=100, le=10_000_000)
    # Events a connection may have queued before it is judged too slow and ended.
    send_queue_max: int = Field(2_000, ge=10, le=1_000_000)
    # Bytes (of event text) a connection may have queued: past it, board state is conflated
    # and then the client is judged too slow (PROTOCOL 3.5). 1 MiB; 0 is not allowed.
    send_queue_bytes: int = Field(1_048_576, ge=16_384, le=1 << 30)
    sse_retry_ms: int = Field(2_000, ge=0, le=600_000)
    heartbeat_seconds: float = Field(15.0, gt=0, le=15.0)
    # How often an instance re-checks the log head, so a pub/sub message lost in a quiet
    # period is still delivered (the wake-up is pub/sub; this is the safety net).
    backfill_interval: float = Field(1.0, gt=0, le=60)
    # How often each instance looks for committed changes whose events are not yet published.
    outbox_interval: float = Field(0.5, gt=0, le=60)
    presence_ttl_seconds: float = Field(15.0, ge=3, le=300)
    # PROTOCOL 3.6. Open SSE + WebSocket streams on this instance (0: no limit); below the
    # 20,000 open-file limit, so a full instance answers 503 instead of failing accept().
    max_connections: int = Field(15_000, ge=0, le=1_000_000)
    # Open streams per token sub across the cluster (per client address when anonymous).
    max_connections_per_user: int = Field(20, ge=0, le=1_000_000)
    # Requests per second per sub, burst of the same size (0: off): every POST and PUT but
    # POST /api/publish, which has its own limit.
    rate_limit_writes: int = Field(100, ge=0, le=1_000_000)
    rate_limit_publish: int = Field(1_000, ge=0, le=1_000_000)
    # PROTOCOL 3.7: on SIGTERM, open streams end spread evenly over this many seconds (then
    # the process exits within 5 s more). Each SSE stream's last word is `retry:` with a
    # random delay up to drain_retry_max_ms, so bare EventSources come back spread out.
    drain_seconds: float = Field(10.0, ge=0, le=600)
    drain_retry_max_ms: int = Field(3_000, ge=0, le=60_000)
    # PROTOCOL 3.6 dead peers. WebSocket: a ping every ws_ping_seconds; a peer that sent
    # nothing (no pong) for ws_ping_timeout_seconds after a ping is closed. SSE: the
    # heartbeat write is the probe, and TCP_USER_TIMEOUT (plus keepalive) on the socket makes
    # unacknowledged data fail the connection after tcp_user_timeout_seconds (0: the kernel's
    # default, about 15 minutes). Defaults: found within 15 + 15 s (WS), 15 + 30 s (SSE).
    ws_ping_seconds: float = Field(15.0, gt=0, le=30)
    ws_ping_timeout_seconds: float = Field(15.0, gt=0, le=30)
    tcp_user_timeout_seconds: float = Field(30.0, ge=0, le=45)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if value.startswith("redis+sentinel://"):
            from .engine.redis.connection import SentinelURL  # (imports redis-py: only here)

            SentinelURL.parse(value)  # a ValueError names what is wrong
            return value
        if value.startswith("redis+cluster://"):
            from .engine.redis.cluster import ClusterURL

            ClusterURL.parse(value)
            return value
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "must start with redis://, rediss://, unix://, redis+sentinel:// or "
                "redis+cluster://"
            )
        _check_single_redis_url(value)
        return value

    @field_validator("jwt_public_key")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        if value:
            from .auth import check_public_key  # (imports authlib: only here)

            check_public_key(value)
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        if not value.startswith(
            ("sqlite://", "postgresql://", "postgresql+asyncpg://", "postgres://")
        ):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        if value.startswith("postgres://"):
            value = "postgresql://" + value.removeprefix("postgres://")
        if value.startswith("sqlite") and ":memory:" in value:
            # `databases` opens a new connection per task: each would see its own empty database.
            raise ValueError("an in-memory SQLite database cannot be shared: use a file")
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _algorithms(cls, value: str) -> str:
        allowed = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}
        names = [name.strip() for name in value.split(",") if name.strip()]
        if not names:
            raise ValueError("must name at least one algorithm")
        bad = [name for name in names if name not in allowed]
        if bad:
            raise ValueError(f"unsupported algorithm(s) {bad}; allowed: {sorted(allowed)}")
        return ",".join(names)

    @model_validator(mode="after")
    def _keys_match_algorithms(self) -> Settings:
        asymmetric = any(not name.startswith("HS") for name in self.algorithms)
        if asymmetric and not (self.jwt_public_key or self.jwt_jwks_url):
            raise ValueError(
                "JWT_ALGORITHMS names RS/ES algorithms: set JWT_PUBLIC_KEY or JWT_JWKS_URL"
            )
        if self.jwt_secret is not None and len(self.jwt_secret) < 16:
            raise ValueError("JWT_SECRET must be at least 16 characters")
        return self

    @property
    def algorithms(self) -> list[str]:
        return self.jwt_algorithms.split(",")

    @property
    def dev_mode(self) -> bool:
        """No key configured: sign with a random per-process secret and offer /api/dev/token."""
        return not (self.jwt_secret or self.jwt_public_key or self.jwt_jwks_url)

    @property
    def cors_origin_list(self) -> list[str] | None:
        if not self.cors_origins:
            return None
        return [
            origin.strip().rstrip("/") for origin in self.cors_origins.split(",") if origin.strip()
        ]


def _check_single_redis_url(url: str) -> None:
    """What redis-py would only find when it connects (a traceback naming no variable) or
    silently ignore (a db that is not a number: db 0). The message never repeats the URL,
    which may hold a password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// needs the socket's path: unix:///path/to/redis.sock")
        db = parse_qs(parts.query).get("db", [""])[0]
    else:
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        if port == 0:
            raise ValueError("the port must be a number from 1 to 65535")
        db = parts.path.strip("/") or parse_qs(parts.query).get("db", [""])[0]
    if db and not db.isdigit():
        raise ValueError("the db must be a number")


def load_settings(**overrides: object) -> Settings:
    """Read the environment (overrides win); raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper() or "configuration"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
