"""The soak's exactly-once check (pure): what it reads from the wire, and what it calls a
duplicate, a gap, an allowed conflation and an allowed jump after stream:reset."""

from __future__ import annotations

import json

from quart_app.loadtest.soak_check import ClientCheck, Reference, Seen, scan


def envelope(cursor: str, event: str, data: object) -> bytes:
    body = {"id": cursor, "rooms": ["matches"], "event": event, "data": data, "ts": 1}
    return json.dumps(body, separators=(",", ":")).encode()


def sse(*envelopes: bytes) -> bytes:
    frames = b""
    for raw in envelopes:
        parsed = json.loads(raw)
        frames += f"id: {parsed['id']}\nevent: {parsed['event']}\ndata: ".encode() + raw + b"\n\n"
    return frames


def test_scan_reads_cursor_event_and_match_id_from_sse_frames_and_poll_answers() -> None:
    created = envelope("e.1", "match:created", {"match_id": "m1", "player_ids": ["a", "b"]})
    update = envelope("e.2", "leaderboard:update", {"match_id": None, "changes": []})
    reset = envelope("e.3", "stream:reset", {"reason": "unknown"})
    initial = envelope("e.3", "leaderboard:initial", {"entries": [], "conflated": True})
    want = [
        Seen("e.1", "match:created", "m1"),
        Seen("e.2", "leaderboard:update", None),
        Seen("e.3", "stream:reset", None, reset_reason="unknown"),
        Seen("e.3", "leaderboard:initial", None, conflated=True),
    ]
    assert scan(sse(created, update, reset, initial)) == want
    answer = b'{"events":[' + b",".join([created, update, reset, initial]) + b'],"cursor":"e.9"}'
    assert scan(answer) == want


def reference_of(*events: tuple[str, str | None]) -> Reference:
    reference = Reference("e.0")
    for n, (event, match_id) in enumerate(events, 1):
        reference.add(Seen(f"e.{n}", event, match_id))
    return reference


LOG = reference_of(
    ("match:created", "m1"),
    ("leaderboard:update", "m1"),
    ("match:result", "m1"),
    ("leaderboard:update", "m1"),
    ("match:created", "m2"),
)


def fed(*cursors: int, before: list[Seen] | None = None) -> ClientCheck:
    check = ClientCheck("c")
    for seen in before or []:
        check.take(seen)
    for n in cursors:
        event, match_id = LOG.events[n - 1]
        check.take(Seen(f"e.{n}", event, match_id))
    check.finish(LOG)
    return check


def test_every_event_once_in_order_is_ok() -> None:
    check = fed(1, 2, 3, 4, 5)
    assert check.ok and check.checked == 5


def test_a_duplicate_a_gap_and_a_missing_tail_are_caught() -> None:
    assert fed(1, 2, 2, 3, 4, 5).duplicates == 1
    assert fed(1, 2, 4, 5).missing == 1  # match:result m1 skipped
    assert fed(1, 2, 3).missing == 2  # never got the last two


def test_a_payload_that_differs_from_the_log_is_caught() -> None:
    check = ClientCheck("c")
    for n, (event, _) in enumerate(LOG.events, 1):
        check.take(Seen(f"e.{n}", event, "other"))
    check.finish(LOG)
    assert check.mismatched == 5


def test_board_updates_may_be_skipped_after_a_conflated_snapshot_only() -> None:
    snapshot = Seen("e.3", "leaderboard:initial", None, conflated=True)
    check = ClientCheck("c")
    for n in (1, 2, 3):
        check.take(Seen(f"e.{n}", *LOG.events[n - 1]))
    check.take(snapshot)  # stands for the board update e.4
    check.take(Seen("e.5", *LOG.events[4]))
    check.finish(LOG)
    assert check.ok and check.conflated_skips == 1
    # a conflated snapshot does not excuse a critical event
    assert not fed(1, 2, 4, 5, before=[snapshot]).ok


def test_a_jump_is_allowed_after_a_reset_unknown_but_not_after_a_reset_slow() -> None:
    check = ClientCheck("c")
    check.take(Seen("e.1", *LOG.events[0]))
    check.take(Seen("x.0", "stream:reset", None, reset_reason="unknown"))
    check.take(Seen("e.4", *LOG.events[3]))
    check.take(Seen("e.5", *LOG.events[4]))
    check.finish(LOG)
    assert check.ok and check.resets == {"unknown": 1}

    slow = ClientCheck("c")
    slow.take(Seen("e.1", *LOG.events[0]))
    slow.take(Seen("e.1", "stream:reset", None, reset_reason="slow"))
    for n in (4, 5):
        slow.take(Seen(f"e.{n}", *LOG.events[n - 1]))
    slow.finish(LOG)
    assert slow.missing == 2


def test_events_the_reference_has_not_seen_yet_wait_in_order() -> None:
    reference = Reference("e.0")
    check = ClientCheck("c")
    check.take(Seen("e.1", "match:created", "m1"))
    check.settle(reference)
    assert check.checked == 0 and len(check.pending) == 1
    reference.add(Seen("e.1", "match:created", "m1"))
    check.settle(reference)
    assert check.ok and check.checked == 1 and not check.pending
