"""The realtime core: the board, the event log and its fan-out. Never imports Quart."""

from __future__ import annotations

from .base import Engine


def create_engine(redis_url: str | None, **options: object) -> Engine:
    """The memory engine without a Redis URL, else the Redis engine (imported lazily)."""
    if redis_url is None:
        from .memory import MemoryEngine

        return MemoryEngine(**options)  # type: ignore[arg-type]
    from .redis import RedisEngine

    return RedisEngine(redis_url, **options)  # type: ignore[arg-type]
