"""What a committed change asks the engine to do: board rows and events, with rank slots.

Ranks are not known when SQL commits: they are the engine's to give, in the same atomic step
that applies the board rows (an order-statistic lookup, O(log n)). An event names where a rank
goes with a `RankSlot`; the engine fills it in.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .board import BoardEntry

# "after": the player's rank once the publication's board rows are applied (PROTOCOL 2: the
# rank right after the event); "before": the rank before they were applied (previous_rank).
RankWhen = Literal["before", "after"]
Path = tuple[str | int, ...]

# player id -> (rank before, rank after); None where the player is not on the board.
RankTable = Mapping[str, tuple[int | None, int | None]]


@dataclass(frozen=True, slots=True)
class RankSlot:
    """`data[path...]` is to hold the rank of `player_id`, before or after the rows apply."""

    path: Path
    player_id: str
    when: RankWhen

    def to_json(self) -> list[Any]:
        return [list(self.path), self.player_id, self.when]

    @classmethod
    def from_json(cls, obj: list[Any]) -> RankSlot:
        path, player_id, when = obj
        return cls(tuple(path), player_id, when)


@dataclass(frozen=True, slots=True)
class Draft:
    """An event before the log has given it a place (and, when it has rank slots, ranks)."""

    rooms: tuple[str, ...]
    event: str
    data: dict[str, Any]
    ranks: tuple[RankSlot, ...] = ()

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"rooms": list(self.rooms), "event": self.event, "data": self.data}
        if self.ranks:
            obj["ranks"] = [slot.to_json() for slot in self.ranks]
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Draft:
        ranks = tuple(RankSlot.from_json(slot) for slot in obj.get("ranks", ()))
        return cls(tuple(obj["rooms"]), obj["event"], obj["data"], ranks)

    def ranked_data(self, table: RankTable) -> dict[str, Any]:
        """`data` with every rank slot filled from `table`."""
        if not self.ranks:
            return self.data
        # Only the containers on a slot's path are copied (the rest is shared, read-only):
        # a deep copy of every event's data was a tenth of a result's CPU at 1M players.
        data = dict(self.data)
        fresh = {id(data)}  # containers copied here; alive until the end, so ids are unique
        for slot in self.ranks:
            before, after = table[slot.player_id]
            target: Any = data
            for step in slot.path[:-1]:
                child = target[step]
                if id(child) not in fresh:
                    child = list(child) if isinstance(child, list) else dict(child)
                    fresh.add(id(child))
                    target[step] = child
                target = child
            target[slot.path[-1]] = after if slot.when == "after" else before
        return data

    def split_json(self) -> tuple[list[str], list[RankSlot]]:
        """`data` as JSON text cut where the slots go: parts[0] + rank(slots[0]) + parts[1]
        + ... . For an engine that fills ranks into text (the Redis engine's Lua script)."""
        if not self.ranks:
            return [json.dumps(self.data, separators=(",", ":"))], []
        while True:
            # A random marker per attempt: user text (a name) that happens to hold it is seen
            # by the count check below, and another marker is drawn.
            token = secrets.token_hex(8)
            markers = [f"@rank-{token}-{i}@" for i in range(len(self.ranks))]
            data = copy.deepcopy(self.data)
            for slot, marker in zip(self.ranks, markers, strict=True):
                _set(data, slot.path, marker)
            text = json.dumps(data, separators=(",", ":"))
            quoted = [f'"{marker}"' for marker in markers]
            if all(
                text.count(q) == 1 and text.count(m) == 1
                for q, m in zip(quoted, markers, strict=True)
            ):
                break
        positions = sorted(
            (text.index(q), q, slot) for q, slot in zip(quoted, self.ranks, strict=True)
        )
        parts, slots, start = [], [], 0
        for index, q, slot in positions:
            parts.append(text[start:index])
            slots.append(slot)
            start = index + len(q)
        parts.append(text[start:])
        return parts, slots


def _set(data: Any, path: Path, value: Any) -> None:
    target = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


@dataclass(frozen=True, slots=True)
class Publication:
    """What one committed change asks the engine to do, atomically.

    `key` makes it idempotent: a publication whose key was already applied is a no-op
    (the outbox may deliver a row twice: once from the request, once from the relay).
    """

    key: str | None = None
    board: tuple[BoardEntry, ...] = ()
    events: tuple[Draft, ...] = ()
    ts: int = field(default_factory=lambda: int(time.time() * 1000))

    def ranked_players(self) -> list[str]:
        """The players whose ranks the events ask for, each once, in order of appearance."""
        seen: dict[str, None] = {}
        for draft in self.events:
            for slot in draft.ranks:
                seen.setdefault(slot.player_id, None)
        return list(seen)

    def to_json(self) -> str:
        return json.dumps(
            {
                "key": self.key,
                "board": [entry.as_row() for entry in self.board],
                "events": [draft.to_json() for draft in self.events],
                "ts": self.ts,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Publication:
        obj = json.loads(text)
        return cls(
            key=obj["key"],
            board=tuple(BoardEntry(**entry) for entry in obj["board"]),
            events=tuple(Draft.from_json(draft) for draft in obj["events"]),
            ts=obj["ts"],
        )
