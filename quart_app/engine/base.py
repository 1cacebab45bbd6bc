"""The engine interface: what the service needs from the memory and the Redis engine alike.

The board's vocabulary (BoardEntry, Draft, Publication) lives in domain/; it is imported here
(and so still importable from here) because the interface speaks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..domain.board import BoardEntry, Ranked
from ..domain.publication import Draft, Publication, RankSlot, RankTable
from .cursor import encode
from .rate_limit import RateDecision

__all__ = [
    "BoardEntry",
    "Draft",
    "Engine",
    "EngineUnavailable",
    "Event",
    "LogGap",
    "Publication",
    "RankSlot",
    "RankTable",
    "Ranked",
    "build_event",
]


def envelope_json(cursor: str, rooms_json: str, event: str, data_json: str, ts: int) -> str:
    """The envelope of PROTOCOL.md section 2, as the one line of JSON every transport sends.

    Built by concatenation because the Redis engine's Lua script builds the very same text.
    """
    return (
        f'{{"id":"{cursor}","rooms":{rooms_json},"event":"{event}","data":{data_json},"ts":{ts}}}'
    )


class Event:
    """An event in the log, encoded once; every transport shares these bytes."""

    __slots__ = ("seq", "cursor", "rooms", "name", "text", "_sse", "_sse_chunk", "_ws_frame")

    def __init__(self, seq: int, cursor: str, rooms: Sequence[str], name: str, text: str) -> None:
        self.seq = seq
        self.cursor = cursor
        self.rooms = tuple(rooms)
        self.name = name
        self.text = text
        self._sse: bytes | None = None
        self._sse_chunk: bytes | None = None
        self._ws_frame: bytes | None = None

    @classmethod
    def from_text(cls, seq: int, text: str) -> Event:
        obj = json.loads(text)
        return cls(seq, obj["id"], obj["rooms"], obj["event"], text)

    @property
    def sse(self) -> bytes:
        """The Server-Sent Events frame. The envelope is one line of JSON (json.dumps never
        emits a raw newline), and cursor and name come from a safe alphabet, so user text
        cannot forge a frame."""
        if self._sse is None:
            self._sse = self._sse_frame()
        return self._sse

    def _sse_frame(self) -> bytes:
        return f"id: {self.cursor}\nevent: {self.name}\ndata: {self.text}\n\n".encode()

    @property
    def sse_chunk(self) -> bytes:
        """The SSE frame as one HTTP/1.1 chunk, for streams written straight to the socket.
        Only the chunk is kept (not the frame as well): an event queued for raw sockets holds
        one encoding besides its text."""
        if self._sse_chunk is None:
            frame = self._sse or self._sse_frame()
            self._sse_chunk = b"%x\r\n%b\r\n" % (len(frame), frame)
        return self._sse_chunk

    @property
    def ws_frame(self) -> bytes:
        """The envelope as one unmasked WebSocket text frame (RFC 6455 section 5.2)."""
        if self._ws_frame is None:
            payload = self.text.encode()
            size = len(payload)
            if size < 126:
                header = bytes((0x81, size))
            elif size < 65536:
                header = bytes((0x81, 126)) + size.to_bytes(2, "big")
            else:
                header = bytes((0x81, 127)) + size.to_bytes(8, "big")
            self._ws_frame = header + payload
        return self._ws_frame

    def __repr__(self) -> str:
        return f"Event({self.seq}, {self.name!r}, {self.rooms!r})"


# json.dumps(..., separators=...) builds a new encoder per call: one, built once, for the
# events of every publish (the same text json.dumps gives).
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def build_event(
    epoch: str, seq: int, draft: Draft, ts: int, ranks: RankTable | None = None
) -> Event:
    """The event `draft` becomes at `seq`, its rank slots filled from `ranks`."""
    cursor = encode(epoch, seq)
    text = envelope_json(
        cursor,
        _compact_json(list(draft.rooms)),
        draft.event,
        _compact_json(draft.ranked_data(ranks or {})),
        ts,
    )
    return Event(seq, cursor, draft.rooms, draft.event, text)


class LogGap(Exception):
    """The log cannot continue from a cursor: `reason` is "expired" or "unknown"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EngineUnavailable(Exception):
    """The engine's backing service does not answer (Redis down)."""


Listener = Callable[[list[Event]], None]
CallHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class NoSuchInstance(Exception):
    """A call named an instance that is not running."""


class Engine(ABC):
    """The board, the event log, presence; and the live feed of new events."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        # Names this process among the instances sharing the engine (connection ids carry it).
        self.instance_id = secrets.token_hex(4)
        self._call_handler: CallHandler | None = None

    # lifecycle -----------------------------------------------------------------------------
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def ping(self) -> bool:
        """True when the backing service answers (readiness)."""

    # the event log --------------------------------------------------------------------------
    @property
    @abstractmethod
    def epoch(self) -> str:
        """Changes when the log's history is lost (a new process, a Redis that lost its data)."""

    @abstractmethod
    async def publish(self, publication: Publication) -> list[Event]:
        """Apply the board rows and append the events, atomically. Returns the new events,
        empty when the publication's key was applied before."""

    async def publish_many(
        self, publications: Sequence[Publication]
    ) -> list[list[Event] | Exception]:
        """`publish` of each, in this order (an engine may send them in one round trip): per
        publication its events, or the exception it was refused with. EngineUnavailable when
        the engine does not answer (some may have applied: their keys guard a retry)."""
        out: list[list[Event] | Exception] = []
        for publication in publications:
            try:
                out.append(await self.publish(publication))
            except EngineUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - refused: the rest go on
                out.append(exc)
        return out

    @abstractmethod
    async def head(self) -> int:
        """The sequence number of the newest event (0 for an empty log)."""

    @abstractmethod
    async def read_after(self, seq: int, limit: int) -> list[Event]:
        """Up to `limit` events after `seq`, oldest first. LogGap("expired") when events right
        after `seq` are no longer retained, LogGap("unknown") when `seq` is past the head."""

    def listen(self, listener: Listener) -> None:
        """Call `listener` with every new event, in order, without gaps or repeats, from any
        instance. Called on the event loop; it must not block."""
        self._listeners.append(listener)

    def _deliver(self, events: list[Event]) -> None:
        for listener in self._listeners:
            listener(events)

    # calls between instances --------------------------------------------------------------
    def on_call(self, handler: CallHandler) -> None:
        """Serve calls other instances make to this one (routing a subscribe to the
        instance that holds the stream)."""
        self._call_handler = handler

    async def call(
        self, instance_id: str, request: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Ask instance `instance_id` to handle `request`. NoSuchInstance when no such
        instance runs, TimeoutError when it does not answer in time."""
        if instance_id != self.instance_id or self._call_handler is None:
            raise NoSuchInstance(instance_id)
        async with asyncio.timeout(timeout):
            return await self._call_handler(request)

    # the board -------------------------------------------------------------------------------
    @abstractmethod
    async def board_page(self, offset: int, limit: int) -> tuple[list[Ranked], int]:
        """Entries ranked offset+1 .. offset+limit, and the number of players."""

    async def board_page_json(self, offset: int, limit: int) -> tuple[int, str, int]:
        """(the log's head, board_page as the JSON array of the API's entries (PROTOCOL 2
        `Entry`), the number of players). The head is read first: the page reflects every
        event up to it, maybe more, never fewer. The Redis engine overrides it: one round
        trip, and the entries cut out of its stored JSON rows instead of decoding and
        re-encoding each one (the cost of a page read)."""
        head = await self.head()
        ranked, total = await self.board_page(offset, limit)
        return head, json.dumps([entry.as_entry(rank) for rank, entry in ranked]), total

    @abstractmethod
    async def board_player(self, player_id: str) -> Ranked | None: ...

    @abstractmethod
    async def board_around(self, player_id: str, radius: int) -> list[Ranked]:
        """The player and up to `radius` neighbours on each side; empty for an unknown one."""

    @abstractmethod
    async def board_replace(
        self, load: Callable[[], Awaitable[Sequence[BoardEntry]]], *, take_over: bool = True
    ) -> bool:
        """Replace the whole board at once with the rows `load()` reads (from SQL): readers see
        the old one or the new one, never an empty or partial one; rows published while it
        runs are kept (their versions decide). Board reads that raise
        board_state.BoardIncomplete (a Redis that lost its data) serve again afterwards.

        A shared engine may have another instance's replace running: `take_over` (an
        operator's rebuild) replaces it; otherwise nothing starts and this returns False.
        Returns True when this call replaced the board."""

    # presence ---------------------------------------------------------------------------------
    # A player is online while they hold at least one SSE or WebSocket connection on any
    # instance, or have long-polled within POLL_PRESENCE_SECONDS. The engine publishes
    # `player:online` / `player:offline` (room `presence`) on the transitions, once each.
    @abstractmethod
    async def presence_enter(self, player_id: str) -> None:
        """One more open connection of this player on this instance."""

    @abstractmethod
    async def presence_leave(self, player_id: str) -> None:
        """One connection of this player on this instance closed."""

    @abstractmethod
    async def presence_poll(self, player_id: str) -> None:
        """The player long-polled just now."""

    @abstractmethod
    async def online_count(self) -> int: ...

    @abstractmethod
    async def is_online(self, player_id: str) -> bool: ...

    # limits (PROTOCOL 3.6) ----------------------------------------------------------------------
    @abstractmethod
    async def rate_limit(self, key: str, rate: int) -> RateDecision:
        """Count one request of `key` against `rate` per second (burst of the same size),
        shared by every instance; a refused request is not counted."""

    @abstractmethod
    async def stream_admit(self, subject: str, limit: int) -> bool:
        """Count one more open stream of `subject` (a sub or a client address) on this
        instance, unless all instances together already hold `limit`: then False."""

    @abstractmethod
    async def stream_release(self, subject: str) -> None:
        """A stream admitted by `stream_admit` closed. Never raises for an outage."""

    async def stream_admit_and_enter(self, subject: str, limit: int, player_id: str) -> bool:
        """`stream_admit`, then `presence_enter` only if admitted (an engine may do both in
        one round trip). Never raises for a presence outage."""
        if not await self.stream_admit(subject, limit):
            return False
        with contextlib.suppress(EngineUnavailable):
            await self.presence_enter(player_id)
        return True


POLL_PRESENCE_SECONDS = 40.0


def presence_draft(event: str, player_id: str, online_count: int) -> Draft:
    return Draft(("presence",), event, {"player_id": player_id, "online_count": online_count})
