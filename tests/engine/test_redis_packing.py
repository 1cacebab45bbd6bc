"""Commands packed by hiredis (engine/redis/packing.py) are byte for byte what redis-py's own
asyncio packer writes, for any arguments; what redis-py refuses is refused the same way."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from quart_app.engine.redis import packing

ARGUMENTS = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20),  # (surrogates included: refused by both)
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.booleans(),
    st.binary(max_size=10).map(memoryview),
)
COMMANDS = st.sampled_from(["EVALSHA", b"EVALSHA", "CONFIG GET", b"CLIENT SETNAME", "SET"])


def _packed(pack: Any, connection: Connection, args: tuple[Any, ...]) -> bytes | type:
    try:
        return b"".join(bytes(part) for part in pack(connection, *args))
    except Exception as error:  # (which error, compared below)
        return type(error)


@settings(max_examples=1500, deadline=None)
@given(command=COMMANDS, arguments=st.lists(ARGUMENTS, max_size=24))
def test_hiredis_packs_every_command_as_redis_py_does(command: Any, arguments: list[Any]) -> None:
    connection = Connection()
    args = (command, *arguments)
    assert _packed(packing.pack_command, connection, args) == _packed(
        packing._python_pack, connection, args
    )


def test_what_redis_py_refuses_is_refused() -> None:
    with pytest.raises(DataError):
        packing.pack_command(Connection(), "SET", "key", True)


def test_another_encoding_is_packed_by_redis_py() -> None:
    connection = Connection(encoding="latin-1")
    assert b"".join(packing.pack_command(connection, "SET", "k", "é")).endswith(b"\r\n\xe9\r\n")
