"""The limits of PROTOCOL 3.6 in process (the memory engine: one instance)."""

from __future__ import annotations

import time

from .rate_limit import RateDecision, gcra

# Past this many limited keys, the ones whose TAT has passed (a full quota, as if absent)
# are forgotten, so the table does not grow with every caller ever seen.
_PRUNE_AT = 10_000


class MemoryLimits:
    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._streams: dict[str, int] = {}

    def rate_limit(self, key: str, rate: int) -> RateDecision:
        now = time.monotonic() * 1000
        decision, tat = gcra(self._tats.get(key, 0.0), now, rate)
        self._tats[key] = tat
        if len(self._tats) > _PRUNE_AT:
            self._tats = {k: t for k, t in self._tats.items() if t > now}
        return decision

    def admit(self, subject: str, limit: int) -> bool:
        count = self._streams.get(subject, 0)
        if count >= limit:
            return False
        self._streams[subject] = count + 1
        return True

    def release(self, subject: str) -> None:
        count = self._streams.get(subject, 0)
        if count <= 1:
            self._streams.pop(subject, None)
        else:
            self._streams[subject] = count - 1
