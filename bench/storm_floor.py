"""The floor of a reconnect storm (bench/reconnect_storm.py --engines floor): a server that
does next to nothing, so the storm's rate is the generator's own ceiling on this machine.

A uvloop protocol per connection: a GET gets a canned SSE head and `stream:open` and is kept;
a POST (the generator's publish) is answered 200 and its body's JSON goes out to every open
stream as one event. No auth, no rooms, no log: what is left is accepting and writing.

    python bench/storm_floor.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvloop

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
OPEN = b'retry: 1000\n\nevent: stream:open\ndata: {"connection_id":"c","cursor":"e.0"}\n\n'
streams: set[Any] = set()  # the open streams' transports


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None  # (uvloop's, not an asyncio.Transport subclass)
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            if head.startswith(b"GET "):
                self.transport.write(HEAD + chunk(OPEN))
                streams.add(self.transport)
            else:
                self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                event = chunk(b"event: announcement\ndata: " + body + b"\n\n")
                for stream in list(streams):
                    stream.write(event)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            streams.discard(self.transport)


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(
        Connection, "127.0.0.1", port, backlog=2048
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
