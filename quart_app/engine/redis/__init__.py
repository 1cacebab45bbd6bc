"""The Redis engine: board, event log and presence in Redis, shared by any number of instances.
One module per job; `engine.py` composes them (its docstring lists them)."""

from __future__ import annotations

from .. import base
from .engine import RedisEngine

# Long-poll presence; read at call time (presence.py) so that tests can shorten it here.
POLL_PRESENCE_SECONDS = base.POLL_PRESENCE_SECONDS

__all__ = ["POLL_PRESENCE_SECONDS", "RedisEngine"]
