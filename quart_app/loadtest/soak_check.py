"""The soak's exactly-once, in-order check. Pure: no I/O.

Cursors are opaque (PROTOCOL 2), so order is not read from them: one reference reader
follows the rooms from the run's first cursor without ever dropping, and the order it saw is
the log's order for those rooms. The reference itself is checked against what the writer
was told (every 2xx result's `match:result` in it exactly once). Each client then has to see
a run of that same sequence, each event once, with the same event name and match id for the
same cursor. Clients can run ahead of the reference: what is not in it yet waits in a short
pending queue until it is.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# One envelope, as the service writes it (compact JSON, members in this order): its cursor,
# its event name and, for match and board events, the match id that leads its data.
ENVELOPE = re.compile(
    rb'\{"id":"([^"]*)","rooms":\[[^\]]*\],"event":"([^"]*)","data":'
    rb'(?:\{"match_id":(?:"([^"]*)"|null))?'
)
_RESET_REASON = re.compile(rb'"reason":"([^"]*)"')
# Not from the log, never replayed (PROTOCOL 2): they are not part of the checked sequence.
SNAPSHOTS = frozenset({"stream:open", "stream:reset", "leaderboard:initial", "leaderboard:window"})
# What a conflated snapshot may stand in for (PROTOCOL 3.5).
CONFLATABLE = frozenset({"leaderboard:update", "leaderboard:window"})


@dataclass(frozen=True, slots=True)
class Seen:
    """One envelope as a client saw it."""

    cursor: str
    event: str
    match_id: str | None
    reset_reason: str | None = None  # stream:reset only
    conflated: bool = False  # leaderboard:initial only


def scan(raw: bytes) -> list[Seen]:
    """Every envelope in a run of bytes (SSE frames, WebSocket messages, a poll answer)."""
    found = list(ENVELOPE.finditer(raw))
    out: list[Seen] = []
    for index, match in enumerate(found):
        event = match.group(2).decode()
        reason: str | None = None
        conflated = False
        if event in ("stream:reset", "leaderboard:initial"):
            end = found[index + 1].start() if index + 1 < len(found) else len(raw)
            body = raw[match.end() : end]
            if event == "stream:reset":
                got = _RESET_REASON.search(body)
                reason = got.group(1).decode() if got else "?"
            else:
                conflated = b'"conflated":true' in body
        match_id = match.group(3)
        out.append(
            Seen(
                match.group(1).decode(),
                event,
                match_id.decode() if match_id is not None else None,
                reason,
                conflated,
            )
        )
    return out


class Reference:
    """The log's order for the checked rooms: cursor -> ordinal, and what is at each."""

    def __init__(self, start_cursor: str) -> None:
        self.start_cursor = start_cursor
        self.ordinal: dict[str, int] = {}
        self.events: list[tuple[str, str | None]] = []  # (event, match_id) by ordinal
        self.duplicates = 0
        self.resets: list[str] = []

    def add(self, seen: Seen) -> None:
        if seen.event == "stream:reset":
            self.resets.append(seen.reset_reason or "?")
            return
        if seen.event in SNAPSHOTS:
            return
        if seen.cursor in self.ordinal:
            self.duplicates += 1
            return
        self.ordinal[seen.cursor] = len(self.events)
        self.events.append((seen.event, seen.match_id))

    def __len__(self) -> int:
        return len(self.events)

    def count(self, event: str, match_id: str) -> int:
        return sum(1 for e in self.events if e == (event, match_id))


@dataclass
class ClientCheck:
    """One client across all its sessions: the next reference ordinal it must see."""

    name: str
    expected: int = 0  # every client starts at the reference's start cursor
    checked: int = 0
    duplicates: int = 0
    missing: int = 0
    mismatched: int = 0
    resets: dict[str, int] = field(default_factory=dict)
    conflated_skips: int = 0
    sessions: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    pending: deque[Seen] = field(default_factory=deque)
    _conflated: bool = False  # a conflated snapshot since the last checked event
    _jump_allowed: bool = False  # a stream:reset (expired/unknown): the client starts over

    def take(self, seen: Seen) -> None:
        # Snapshots and resets queue with the events: what they allow depends on where they
        # came in the stream, and events wait here until the reference has them.
        if seen.event in SNAPSHOTS and seen.event not in ("stream:reset", "leaderboard:initial"):
            return
        self.pending.append(seen)

    def settle(self, reference: Reference) -> None:
        """Check what the reference already holds, in the order it arrived."""
        while self.pending:
            seen = self.pending[0]
            if seen.event == "stream:reset":
                reason = seen.reset_reason or "?"
                self.resets[reason] = self.resets.get(reason, 0) + 1
                # "slow": the client resumes with its cursor, nothing may be lost
                self._jump_allowed = self._jump_allowed or reason != "slow"
            elif seen.event == "leaderboard:initial":
                self._conflated = self._conflated or seen.conflated
            else:
                ordinal = reference.ordinal.get(seen.cursor)
                if ordinal is None:
                    return
                self._check(seen, ordinal, reference)
            self.pending.popleft()

    def _check(self, seen: Seen, ordinal: int, reference: Reference) -> None:
        self.checked += 1
        if reference.events[ordinal] != (seen.event, seen.match_id):
            self.mismatched += 1
            self._example(
                f"{seen.cursor}: got {seen.event} {seen.match_id}, "
                f"the log has {reference.events[ordinal]}"
            )
        if ordinal < self.expected:
            if self._jump_allowed:
                self.expected = ordinal + 1
                self._jump_allowed = False
                return
            self.duplicates += 1
            self._example(f"{seen.cursor} ({seen.event} {seen.match_id}) again or late")
            return
        if ordinal > self.expected:
            skipped = reference.events[self.expected : ordinal]
            if self._jump_allowed:
                pass
            elif self._conflated and all(event in CONFLATABLE for event, _ in skipped):
                self.conflated_skips += len(skipped)
            else:
                self.missing += len(skipped)
                self._example(f"skipped {len(skipped)} before {seen.cursor}: {skipped[:3]}")
        self.expected = ordinal + 1
        self._conflated = False
        self._jump_allowed = False

    def finish(self, reference: Reference) -> None:
        """At the end of the run: whatever the reference has that the client never got."""
        self.settle(reference)
        behind = len(reference) - self.expected
        if behind > 0 and not (
            self._conflated and all(e in CONFLATABLE for e, _ in reference.events[self.expected :])
        ):
            self.missing += behind
            self._example(f"never got the last {behind} events")
        if self.pending:
            self.mismatched += len(self.pending)
            self._example(f"{len(self.pending)} events the reference never saw")

    def note_session(self, transport: str, failure: str | None) -> None:
        self.sessions[transport] = self.sessions.get(transport, 0) + 1
        if failure:
            self.failures[failure] = self.failures.get(failure, 0) + 1

    def _example(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.missing or self.mismatched)

    def summary(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "mismatched": self.mismatched,
            "resets": self.resets,
            "conflated_skips": self.conflated_skips,
            "sessions": self.sessions,
            "failures": self.failures,
            "examples": self.examples,
        }
