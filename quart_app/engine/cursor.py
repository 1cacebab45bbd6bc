"""Cursors: opaque to clients, `<epoch>.<seq>` to us."""

from __future__ import annotations


class BadCursor(ValueError):
    """Not a cursor this service could have issued."""


def encode(epoch: str, seq: int) -> str:
    return f"{epoch}.{seq}"


def decode(cursor: str) -> tuple[str, int]:
    epoch, sep, seq = cursor.rpartition(".")
    if not sep or not epoch or not seq.isdigit() or len(seq) > 18 or len(cursor) > 64:
        raise BadCursor(cursor[:64])
    return epoch, int(seq)
