"""A ScriptLane in front of a server that answers SCRIPT LOAD but never keeps the script (a
proxy that sends SCRIPT LOAD and EVALSHA to different backends): the calls that got NOSCRIPT
are sent again after one SCRIPT LOAD, and a second NOSCRIPT is the call's error. Resending
every time, with a fresh bound each round, would never settle the call and would hammer the
server (about 20,000 LOAD + EVALSHA round trips in 3 s). A fake RESP server stands in for the
proxy (a real redis-server keeps what SCRIPT LOAD loaded)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import hiredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from quart_app.engine.redis.script_lane import ScriptLane


class ForgetfulServer:
    """RESP server: +OK to the handshake, a sha to SCRIPT LOAD, NOSCRIPT to every EVALSHA."""

    def __init__(self) -> None:
        self.evalshas = 0
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        # (each handler ends on its client's hang-up; cancelling one makes Python 3.11's
        # start_server log a CancelledError)
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        commands = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                commands.feed(data)
                while (command := commands.gets()) is not False:
                    name = command[0].upper()
                    if name == b"EVALSHA":
                        self.evalshas += 1
                        writer.write(b"-NOSCRIPT No matching script.\r\n")
                    elif name == b"SCRIPT":
                        writer.write(b"$40\r\n" + b"0" * 40 + b"\r\n")
                    else:
                        writer.write(b"+OK\r\n")
        finally:
            writer.close()


@pytest.fixture(name="forgetful")
async def _forgetful() -> AsyncIterator[ForgetfulServer]:
    server = ForgetfulServer()
    yield server
    await server.stop()


async def test_a_script_the_server_never_keeps_fails_the_call_after_one_reload(
    forgetful: ForgetfulServer,
) -> None:
    client = aioredis.from_url(await forgetful.start())
    lane = ScriptLane(client.register_script("return 1"), bound=1)
    try:
        call = lane.submit([], [])
        call.add_done_callback(lambda done: done.cancelled() or done.exception())  # (retrieved)
        settled, _ = await asyncio.wait([call], timeout=3)
        if not settled:
            raise TimeoutError(f"not settled after {forgetful.evalshas} EVALSHAs")
        assert isinstance(call.exception(), NoScriptError)
        assert forgetful.evalshas == 2
    finally:
        await lane.close()
        await client.aclose()
