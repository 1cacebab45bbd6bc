"""Per-client bookkeeping: did this client see every published event exactly once, in order,
and how late.

The publisher numbers events n = 0, 1, 2, ... With P publisher connections, connection p
sends the n with n % P == p, one request after the other, so the server's log holds each
connection's events in n order, while the connections interleave freely. A client must see
every n exactly once, and each connection's events in increasing n.

Fast path (one publisher, nothing wrong so far): a batch is checked with one list
comparison against a range, in C. The first anomaly switches the client to a bitmap of
seen n (one byte each), exact from then on; that costs a Python step per event, but only
for a client that already has something to report.
"""

from __future__ import annotations

from dataclasses import dataclass

_BITMAP_LIMIT = 50_000_000  # an n beyond this is not ours to track (a foreign publisher?)


@dataclass(slots=True)
class Verdict:
    received: int  # this run's events delivered to the client (duplicates included)
    missing: int
    duplicated: int
    out_of_order: int
    unexpected: int  # n never published (or from a failed publish) yet delivered


class Tracker:
    __slots__ = (
        "publishers",
        "next_n",
        "high",
        "seen",
        "received",
        "duplicated",
        "out_of_order",
        "unexpected",
        "max_latency_ns",
        "last_ns",
        "first_ns",
    )

    def __init__(self, publishers: int = 1) -> None:
        self.publishers = publishers
        self.next_n = 0  # one publisher, fast path: every n below this was seen once
        # Per publisher: the smallest n it may send next (its events arrive increasing).
        self.high = list(range(publishers))
        self.seen: bytearray | None = None
        self.received = 0
        self.duplicated = 0
        self.out_of_order = 0
        self.unexpected = 0
        self.max_latency_ns = 0
        self.last_ns = 0
        self.first_ns = 0

    def feed(self, numbers: list[int]) -> None:
        """The n of this run's events in one arrival batch, in arrival order."""
        count = len(numbers)
        if not count:
            return
        self.received += count
        if self.seen is None and self.publishers == 1:
            first = self.next_n
            if (
                numbers[0] == first
                and numbers[-1] == first + count - 1
                and (count <= 2 or numbers == list(range(first, first + count)))
            ):
                self.next_n = first + count
                return
            self._to_bitmap()
        elif self.seen is None:
            high, step = self.high, self.publishers
            for index, n in enumerate(numbers):
                p = n % step
                if n != high[p]:
                    self._to_bitmap()
                    self._slow(numbers[index:])
                    return
                high[p] = n + step
            return
        self._slow(numbers)

    def _to_bitmap(self) -> None:
        step = self.publishers
        if step == 1:
            self.high[0] = self.next_n
        size = max(1024, max(self.high) + 1) * 2
        seen = bytearray(size)
        for p in range(step):
            below = range(p, self.high[p], step)
            seen[p : self.high[p] : step] = b"\x01" * len(below)
        self.seen = seen

    def _slow(self, numbers: list[int]) -> None:
        seen = self.seen
        assert seen is not None
        high, step = self.high, self.publishers
        for n in numbers:
            if n < 0 or n >= _BITMAP_LIMIT:
                self.unexpected += 1
                continue
            if n >= len(seen):
                seen.extend(bytes(max(n + 1, 2 * len(seen)) - len(seen)))
            if seen[n]:
                self.duplicated += 1
                if seen[n] < 255:
                    seen[n] += 1
                continue
            seen[n] = 1
            p = n % step
            if n < high[p]:
                self.out_of_order += 1
            else:
                high[p] = n + step

    def verdict(self, published: int, failed: frozenset[int] = frozenset()) -> Verdict:
        """Against the events 0..published-1 whose publish was accepted (`failed`: the n
        whose publish was refused; delivering one of those is `unexpected`)."""
        if self.seen is None and not failed:
            if self.publishers == 1:
                seen_count = min(self.next_n, published)
                unexpected = self.next_n - seen_count
            else:
                seen_count = sum(
                    len(range(p, min(h, published), self.publishers))
                    for p, h in enumerate(self.high)
                )
                unexpected = self.received - seen_count
            return Verdict(
                self.received, published - seen_count, 0, 0, self.unexpected + unexpected
            )
        if self.seen is None:
            self._to_bitmap()
        seen = self.seen
        assert seen is not None
        window = bytes(seen[:published]).ljust(published, b"\x00")
        missing = window.count(0)
        unexpected = self.unexpected + sum(1 for n in failed if n < len(seen) and seen[n])
        missing -= sum(1 for n in failed if n < published and not window[n])
        beyond = len(seen) - published
        if beyond > 0:
            unexpected += beyond - seen[published:].count(0)
        return Verdict(self.received, missing, self.duplicated, self.out_of_order, unexpected)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


def summarize(values: list[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else None,
    }
