"""A fault-injection TCP proxy for tests: put it between instances and Redis (or the database)
and switch, at run time, what the network does (`tc netem` is not available here).

    proxy = FaultProxy(redis.port).start()      # then point REDIS_URL at proxy.port
    proxy.delay(0.2)     # every byte arrives 200 ms late, in order
    proxy.blackhole()    # connections stay open but nothing gets through: no FIN, no RST
    proxy.reset()        # every open connection gets an RST (SO_LINGER 0), now
    proxy.refuse()       # the peer is down: open and new connections get an RST
    proxy.pass_through() # back to normal
    proxy.cut_on(b"COMMIT", after_reply=True)  # one-shot: RST at a precise protocol point
    proxy.stop()

It runs its own event loop in its own thread, so sync tests, async tests and the processes
under test all see the same, independent network.

Bytes dropped during a blackhole leave a hole in those connections' streams, so they can never
be trusted again: when the network returns, the proxy resets them (as a kernel does once its
retransmissions give up), and clients reconnect through the healthy path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Mode = Literal["pass", "delay", "blackhole", "refuse"]
T = TypeVar("T")

_CHUNK = 65536


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # True once a byte was dropped: the stream has a hole and must not carry traffic again.
    holed: bool = False
    # Set by an armed cut_on(after_reply=True): the next bytes from upstream are the answer
    # to the matched request; they are dropped and the link is reset.
    cut_at_reply: bool = False


@dataclass(frozen=True)
class _Cut:
    pattern: bytes
    after_reply: bool


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # Linger on, timeout 0: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode: Mode = "pass"
        self.latency = 0.0
        self.accepted = 0
        self.cuts = 0  # how many armed cuts went off
        self._cut: _Cut | None = None
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    # control (from any thread) ------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def pass_through(self) -> None:
        self._call(self._switch("pass", 0.0))

    def delay(self, seconds: float) -> None:
        """Every chunk is forwarded `seconds` after it arrived (order kept, both directions)."""
        self._call(self._switch("delay", seconds))

    def blackhole(self) -> None:
        """Accept and hold: new and open connections stay up, every byte is dropped."""
        self._call(self._switch("blackhole", 0.0))

    def refuse(self) -> None:
        """A peer that is down: every open connection and every new one gets an RST."""
        self._call(self._switch("refuse", 0.0))
        self.reset()

    def reset(self) -> None:
        """RST every open connection now (client and upstream side); the mode stays."""
        self._call(self._reset_all())

    def cut_on(self, pattern: bytes, *, after_reply: bool) -> None:
        """Arm a one-shot cut: the next chunk a client sends that contains `pattern` resets
        its connection (both sides get an RST), at a precise point of a protocol.

        after_reply=False: the chunk is dropped, so the server never sees that request.
        after_reply=True: the chunk reaches the server, which acts on it; its answer is
        dropped, so the client never learns the outcome (a COMMIT that did happen)."""
        self._cut = _Cut(pattern, after_reply)

    @property
    def connections(self) -> int:
        return len(self._links)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # the proxy's own loop ---------------------------------------------------------------------
    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all()

    async def _switch(self, mode: Mode, latency: float) -> None:
        self.mode, self.latency = mode, latency
        if mode != "blackhole":
            await self._reset_all(only_holed=True)

    async def _reset_all(self, only_holed: bool = False) -> None:
        for link in list(self._links):
            if link.holed or not only_holed:
                self._drop(link)

    def _drop(self, link: _Link) -> None:
        self._links.discard(link)
        for task in link.tasks:
            task.cancel()
        _abort_with_rst(link.client)
        if link.upstream is not None:
            _abort_with_rst(link.upstream)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "refuse":
            _abort_with_rst(writer)
            return
        link = _Link(writer)
        self._links.add(link)
        try:
            if self.mode == "blackhole":
                # No upstream at all: the client's SYN was answered, then silence.
                link.holed = True
                while self.mode == "blackhole" and await reader.read(_CHUNK):
                    pass
                if self.mode == "blackhole":  # the client closed while held
                    self._forget(link)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                self._drop(link)
                return
            link.upstream = up_writer
            link.tasks = [
                asyncio.create_task(self._pump(link, reader, up_writer, upstream_bound=True)),
                asyncio.create_task(self._pump(link, up_reader, writer, upstream_bound=False)),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
            self._forget(link)
        except (asyncio.CancelledError, OSError):
            self._forget(link)

    def _forget(self, link: _Link) -> None:
        if link in self._links:
            self._links.discard(link)
            for side in (link.client, link.upstream):
                if side is not None:
                    side.close()

    def _cut_now(self, link: _Link, data: bytes, upstream_bound: bool) -> bool:
        """Whether an armed cut goes off on this chunk: then the link is reset (at once, or
        once the server answered) and the chunk must not be forwarded."""
        if upstream_bound:
            cut = self._cut
            if cut is None or not data or cut.pattern not in data:
                return False
            self._cut = None
            if cut.after_reply:
                link.cut_at_reply = True
                return False  # forwarded: the server acts on it
        elif not (link.cut_at_reply and data):
            return False
        self.cuts += 1
        self._drop(link)
        return True

    async def _pump(
        self,
        link: _Link,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        upstream_bound: bool,
    ) -> None:
        """Copy one direction; chunks wait in a queue until they are due, so a delay adds
        latency without cutting throughput."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    with contextlib.suppress(OSError):
                        sink.write_eof()  # a FIN travels on like the bytes before it
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                sink.write(data)
                await sink.drain()

        forwarder = asyncio.create_task(forward())
        try:
            while True:
                data = await source.read(_CHUNK)
                if self.mode == "blackhole":
                    # Dropped, a FIN included: the other side hears nothing at all.
                    link.holed = True
                    if not data:
                        break
                    continue
                if self._cut_now(link, data, upstream_bound):
                    return
                latency = self.latency if self.mode == "delay" else 0.0
                queue.put_nowait((time.monotonic() + latency, data))
                if not data:
                    break
            await forwarder
        finally:
            forwarder.cancel()
