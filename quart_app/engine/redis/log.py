"""The event log in Redis: publish (board rows, seq numbers, log entries and the bus message of
one publication in one script), read, and the epoch.

Keys: ``meta`` (hash ``{epoch, seq}``: the log's identity and last seq, one unit), ``log`` (a
stream, entry id ``<seq>-0``, fields ``e`` name, ``r`` rooms JSON, ``t`` the envelope text,
trimmed to exactly `event_log_size` entries), ``applied:<key>`` (the idempotency guard of a
publication key, SET NX, `applied_ttl`).

Epochs. The meta hash holds the epoch and the seq together; a script that finds it gone (Redis
restarted without persistence, FLUSHALL, eviction) starts a new epoch with an empty log, using
a fresh random token sent along with every call. Every reply carries the epoch, and `epoch`
follows it, so old cursors then get ``LogGap("unknown")``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import secrets
from collections.abc import Sequence
from typing import Any

from ..base import Event, LogGap, Publication, envelope_json
from ..cursor import encode
from .keys import RedisKeys
from .scripts import Scripts

log = logging.getLogger(__name__)

ReadReply = tuple[str, int, int, int, list[Event]]
# The publish script's keys, args, ranked players and encoded events (rooms JSON, data JSON
# parts, rank slots): what its reply is decoded with.
_PublishCall = tuple[list[str], list[Any], list[str], list[tuple[str, list[str], list[Any]]]]

_SAFE_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")


@functools.lru_cache(maxsize=1024)
def _check_name(name: str) -> str:
    # The envelope is built by concatenation (here and in Lua): the name must need no escaping.
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"bad event name {name!r}")
    return name


@functools.lru_cache(maxsize=4096)
def _rooms(rooms_json: str) -> tuple[str, ...]:
    return tuple(json.loads(rooms_json))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def new_token() -> str:
    return secrets.token_hex(6)


def parse_message(message: str) -> tuple[str, list[Event]]:
    """A bus message (see lua/_log.lua) -> (epoch, events)."""
    epoch, first, count, rest = message.split("\n", 3)
    seq = int(first)
    parts = rest.split("\n")
    events = []
    for i in range(0, 3 * int(count), 3):
        events.append(Event(seq, encode(epoch, seq), _rooms(parts[i + 1]), parts[i], parts[i + 2]))
        seq += 1
    return epoch, events


class RedisLog:
    """The log of one deployment, as seen by one instance."""

    def __init__(
        self, scripts: Scripts, keys: RedisKeys, *, event_log_size: int, applied_ttl_seconds: float
    ) -> None:
        if event_log_size < 1:
            raise ValueError("event_log_size must be at least 1")
        self._scripts = scripts
        self._keys = keys
        self._log_size = str(int(event_log_size))
        self._applied_ttl_ms = str(int(applied_ttl_seconds * 1000))
        self.bus_channel = keys.bus  # where the scripts announce what they appended
        self.epoch = ""
        # The highest seq of `epoch` this instance has seen (read, appended or delivered).
        # Sent with every script run: a log found behind it was rolled back by a failover
        # to a replica that missed writes, and the script starts a new epoch (lua/_log.lua).
        self._high_water = 0

    def script_args(self) -> list[str]:
        """ARGV[1..3] of every script that may append to the log (see lua/_log.lua)."""
        token = new_token()
        if self.epoch:
            token = f"{token}/{self.epoch}/{self._high_water}"
        return [token, self._log_size, self.bus_channel]

    def saw_epoch(self, epoch: str, seq: int = 0) -> None:
        """A reply or a bus message of `epoch` that shows the log up to `seq`."""
        if not epoch:
            return
        if epoch != self.epoch:
            if self.epoch:
                log.warning(
                    "event log epoch changed %s -> %s: Redis lost its data, or failed over to "
                    "a replica that missed writes",
                    self.epoch,
                    epoch,
                )
            self.epoch, self._high_water = epoch, seq
        elif seq > self._high_water:
            self._high_water = seq

    def saw_delivered(self, epoch: str, seq: int) -> None:
        """Events up to `seq` went to the listeners: their clients may hold that position. (A
        late batch of an older epoch changes nothing: the replies decide the epoch.)"""
        if epoch == self.epoch and seq > self._high_water:
            self._high_water = seq

    async def publish(self, publication: Publication) -> tuple[str, list[Event]]:
        """Apply one publication: (epoch, its events), no events when it was applied before."""
        call = self._publish_call(publication)
        return self._published(publication, call, await self._scripts.run("publish", *call[:2]))

    async def publish_many(
        self, publications: Sequence[Publication]
    ) -> list[tuple[str, list[Event]] | Exception]:
        """`publish` of each, in this order, in one round trip: per publication its (epoch,
        events), or the exception of its script (the others apply regardless).
        EngineUnavailable when Redis does not answer (some may have applied)."""
        calls = [self._publish_call(publication) for publication in publications]
        replies = await self._scripts.run_many("publish", [call[:2] for call in calls])
        out: list[tuple[str, list[Event]] | Exception] = []
        for publication, call, reply in zip(publications, calls, replies, strict=True):
            out.append(
                reply if isinstance(reply, Exception) else self._published(publication, call, reply)
            )
        return out

    def _publish_call(self, publication: Publication) -> _PublishCall:
        """The publish script's keys and args, and what decoding its reply needs."""
        ranked = publication.ranked_players()
        args: list[Any] = self.script_args()
        args += [
            "0" if publication.key is None else "1",
            self._applied_ttl_ms,
            str(publication.ts),
            len(publication.board),
            len(publication.events),
            len(ranked),
            *ranked,
        ]
        for entry in publication.board:
            args += [entry.player_id, entry.version, repr(-float(entry.rating)), entry.to_json()]
        encoded = []
        for draft in publication.events:
            rooms_json = _dumps(list(draft.rooms))
            parts, slots = draft.split_json()
            encoded.append((rooms_json, parts, slots))
            args += [_check_name(draft.event), rooms_json, len(slots), parts[0]]
            for slot, part in zip(slots, parts[1:], strict=True):
                args += [("a" if slot.when == "after" else "b") + slot.player_id, part]
        keys = self._keys
        guard = keys.applied(publication.key or "")
        return [*keys.log, guard, *keys.board, *keys.board_next], args, ranked, encoded

    def _published(
        self, publication: Publication, call: _PublishCall, reply: Any
    ) -> tuple[str, list[Event]]:
        """(epoch, events) from the publish script's reply (see lua/publish.lua)."""
        _, _, ranked, encoded = call
        if reply[0] == 0 or not publication.events:
            return "", []
        epoch, seq = reply[1], int(reply[2])
        # The ranks the script filled in, as the text it put there (digits or null).
        ranks = {pid: (reply[3 + 2 * j], reply[4 + 2 * j]) for j, pid in enumerate(ranked)}
        self.saw_epoch(epoch, seq + len(publication.events) - 1)
        events = []
        for draft, (rooms_json, parts, slots) in zip(publication.events, encoded, strict=True):
            data_json = parts[0]
            for slot, part in zip(slots, parts[1:], strict=True):
                before, after = ranks[slot.player_id]
                data_json += (after if slot.when == "after" else before) + part
            cursor = encode(epoch, seq)
            text = envelope_json(cursor, rooms_json, draft.event, data_json, publication.ts)
            events.append(Event(seq, cursor, draft.rooms, draft.event, text))
            seq += 1
        return epoch, events

    async def read(self, after: int | None, limit: int) -> ReadReply:
        """(epoch, head, status, oldest retained seq when expired, events) - see read.lua."""
        args = [*self.script_args(), "" if after is None else str(after), str(limit)]
        reply = await self._scripts.run("read", self._keys.log, args)
        epoch, head, status, first = reply[0], int(reply[1]), int(reply[2]), int(reply[3])
        self.saw_epoch(epoch, head)
        events = []
        for i in range(4, len(reply), 4):
            seq = int(reply[i][:-2])  # "<seq>-0"
            events.append(
                Event(seq, encode(epoch, seq), _rooms(reply[i + 2]), reply[i + 1], reply[i + 3])
            )
        return epoch, head, status, first, events

    async def head(self) -> int:
        return (await self.read(None, 0))[1]

    async def read_after(self, seq: int, limit: int) -> list[Event]:
        expected = self.epoch
        epoch, _head, status, _first, events = await self.read(seq, limit)
        if expected and epoch != expected:
            # The caller checked its cursor against the epoch we had; the log is another one now.
            raise LogGap("unknown")
        if status == 1:
            raise LogGap("unknown")
        if status == 2:
            raise LogGap("expired")
        return events
