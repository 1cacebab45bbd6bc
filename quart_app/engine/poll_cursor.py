"""The cursor of a long-poll answer: one rule for every way a poll ends (PROTOCOL 3.2).

A poller resumes from the cursor of its last answer, on any instance, so that cursor decides
what it will ever see: a cursor past an event of its rooms that it did not receive loses that
event for good. Every exit of a poll (events read from the log, a released wait group's
events, a timeout, a drain, a reset, a 500-event page) takes its cursor from answer_cursor.
"""

from __future__ import annotations


def answer_cursor(last_event: int | None, accounted_through: int, *, cut: bool = False) -> int:
    """The log position an answer's cursor names.

    The rule: the cursor of an answer is the position of its last event; and for an empty
    answer, a position at or below every event of the poller's rooms that is not yet released
    to it: the poller's own position, never the head.

    `last_event`: the seq of the answer's last event (None: an empty answer).
    `accounted_through`: the poller's own position, the furthest position up to which every
    event of its rooms is in this answer or was delivered before. It may pass over events of
    other rooms (a log page read to its end, a wait group's events collected up to its
    release), and the cursor passes over them with it (PROTOCOL 3.2 allows that). A fresh
    poll and a reset start the poller afresh at the position they reflect: nothing before it
    is owed.
    `cut`: the answer is a page cut at MAX_EVENTS out of more events of the poller's rooms:
    accounted only through its last event, whatever `accounted_through` says.

    Why never the head: the head may already hold an event of the poller's rooms that is not
    released to it yet. Wake-ups are paced (WAKE_SLICE per turn of the loop), so between its
    group's release (by events, or by a drain) and the poller's own turn the head moves on;
    an empty answer at the head then made the next poll resume past such an event (6a718dd).
    """
    if last_event is None:
        return accounted_through
    if cut:
        return last_event
    return max(last_event, accounted_through)
