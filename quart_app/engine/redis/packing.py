"""Commands packed into RESP by hiredis (C) instead of redis-py's asyncio connection (Python).

redis-py's synchronous connection packs with hiredis when it is installed; its asyncio one
always packs in Python, one join per argument. The stream admission script takes about two
dozen arguments (the limits', the presence rider's and their keys), and its packing was about a
quarter of a Redis-engine reconnect storm's profiled CPU. hiredis gives the same bytes for
the argument types redis-py's Encoder takes as they are (bytes, str, int); anything else (a
float, whose text redis-py writes with repr(), a bool it refuses, a memoryview, a custom
encoding) goes to redis-py's own packer, as does any argument hiredis refuses.
(tests/engine/test_redis_packing.py holds the two packers to the same bytes.)
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection

_python_pack = AbstractConnection.pack_command
_TAKEN_AS_THEY_ARE = frozenset({bytes, str, int})


def pack_command(connection: Any, *args: Any) -> list[bytes]:
    """AbstractConnection.pack_command, by hiredis when the bytes are sure to be the same."""
    encoder = connection.encoder
    if (
        encoder.encoding == "utf-8"
        and encoder.encoding_errors == "strict"
        and all(type(arg) in _TAKEN_AS_THEY_ARE for arg in args)
    ):
        first = args[0]
        # (a command name with a space, 'CONFIG GET', is split as redis-py splits it)
        if type(first) is str:
            args = (*first.encode().split(), *args[1:])
        elif type(first) is bytes and b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except (TypeError, UnicodeError, ValueError):
            pass  # (redis-py's packer raises its own error for it)
    result: list[bytes] = _python_pack(connection, *args)
    return result


def install() -> None:
    """Every asyncio Redis connection of this process packs with pack_command."""
    AbstractConnection.pack_command = pack_command  # type: ignore[method-assign, assignment]
