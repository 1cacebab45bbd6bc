"""Cursors: opaque to clients, `<epoch>.<seq>` to us."""

from __future__ import annotations

# Not str.isdigit: it accepts superscripts and other scripts' digits, which int() then refuses
# (a 500) or reads as a position (Arabic-Indic, full-width digits).
_ASCII_DIGITS = frozenset("0123456789")


class BadCursor(ValueError):
    """Not a cursor this service could have issued."""


def encode(epoch: str, seq: int) -> str:
    return f"{epoch}.{seq}"


def decode(cursor: str) -> tuple[str, int]:
    epoch, sep, seq = cursor.rpartition(".")
    if (
        not sep
        or not epoch
        or not seq
        or len(seq) > 18
        or len(cursor) > 64
        or not _ASCII_DIGITS.issuperset(seq)
    ):
        raise BadCursor(cursor[:64])
    return epoch, int(seq)
