"""GCRA (generic cell rate algorithm): the rate limit of PROTOCOL 3.6, as a pure function.

One number per limited key, the theoretical arrival time (TAT) of the next request: a request
is allowed when it does not push the TAT more than one window (burst x interval) ahead of now.
The memory engine runs this function; lua/rate_limit.lua is the same arithmetic in Redis
(one key, one round trip, Redis' clock), and the conformance suite checks both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Every limit here is "rate per second, burst of the same size": the window is one second.
WINDOW_MS = 1000.0
_EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The verdict on one request, with what the RateLimit headers need."""

    allowed: bool
    limit: int  # requests per window (the quota)
    remaining: int  # requests still allowed at once after this one
    retry_after_ms: float  # 0 when allowed; else how long until one is allowed
    reset_ms: float  # how long until the whole quota is available again

    @property
    def retry_after_seconds(self) -> int:
        """Retry-After is whole seconds, at least 1 (a 0 would invite an immediate retry)."""
        return max(1, math.ceil(self.retry_after_ms / 1000))

    @property
    def reset_seconds(self) -> int:
        if not self.allowed:
            return self.retry_after_seconds
        return math.ceil(self.reset_ms / 1000)


def gcra(tat: float, now: float, rate: int) -> tuple[RateDecision, float]:
    """Decide one request at time `now` (ms) for a key whose stored TAT is `tat` (ms, 0 when
    none). Returns the decision and the TAT to store (unchanged when refused)."""
    interval = WINDOW_MS / rate
    tat = max(tat, now)
    new_tat = tat + interval
    allow_at = new_tat - WINDOW_MS
    if now < allow_at:
        return RateDecision(False, rate, 0, allow_at - now, tat - now), tat
    # (1000/3 * 2) / (1000/3) is 1.9999999999999998 in floating point: count whole
    # intervals with a tolerance far below the clock's resolution.
    remaining = math.floor((now - allow_at) / interval + _EPSILON)
    return RateDecision(True, rate, remaining, 0.0, new_tat - now), new_tat
