"""Verified tokens, remembered for their lifetime.

A long-poller sends the same token every few seconds, and verifying it (signature, claims)
cost more than the rest of a poll. A token that verified once is good until its `exp`, so its
Identity is kept, keyed by the token string, until then. Bounded (least recently used goes
first), and only successful verifications are kept: a bad token costs a full check each time.
The tokens are keys only: never logged, never listed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from ..auth import Identity

DEFAULT_MAX_TOKENS = 10_000


class TokenCache:
    def __init__(
        self,
        verify: Callable[[str], Identity],
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        self._verify = verify
        self._max = max_tokens
        self._clock = clock
        self._known: OrderedDict[str, Identity] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def __repr__(self) -> str:  # never the tokens themselves
        return f"TokenCache({len(self._known)} of {self._max})"

    def verify(self, token: str) -> Identity:
        """The token's Identity: remembered while it is valid, else verified (AuthError as
        `verify` raises it)."""
        known = self._known.get(token)
        if known is not None:
            if known.expires_at is not None and known.expires_at > self._clock():
                self._known.move_to_end(token)
                return known
            del self._known[token]
        identity = self._verify(token)
        if identity.expires_at is not None and identity.expires_at > self._clock():
            self._known[token] = identity
            if len(self._known) > self._max:
                self._known.popitem(last=False)
        return identity
