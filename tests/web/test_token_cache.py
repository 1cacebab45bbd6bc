"""The token cache of the long-poll path (web/token_cache.py): a verified token is not
verified again until it expires; the cache is bounded; failures are never cached."""

from __future__ import annotations

import pytest

from quart_app.auth import AuthError, Identity
from quart_app.web.token_cache import TokenCache


class Verifier:
    """Counts verifications; a token "sub:exp" verifies as that sub until exp."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, token: str) -> Identity:
        self.calls += 1
        sub, _, exp = token.partition(":")
        if not exp:
            raise AuthError("invalid token: DecodeError")
        return Identity(sub=sub, expires_at=float(exp))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_verified_once_while_it_is_valid() -> None:
    verify, clock = Verifier(), Clock()
    cache = TokenCache(verify, clock=clock)
    for _ in range(5):
        assert cache.verify("ann:1060").sub == "ann"
    assert verify.calls == 1


def test_an_expired_entry_is_verified_again() -> None:
    verify, clock = Verifier(), Clock()
    cache = TokenCache(verify, clock=clock)
    cache.verify("ann:1060")
    clock.now = 1060.0  # at exp: no longer trusted from memory
    cache.verify("ann:1060")
    assert verify.calls == 2
    # A token already expired when verified (accepted within the leeway) is not kept.
    assert len(cache) == 0


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    verify, clock = Verifier(), Clock()
    cache = TokenCache(verify, max_tokens=2, clock=clock)
    cache.verify("a:2000")
    cache.verify("b:2000")
    cache.verify("a:2000")  # a is now the most recent
    cache.verify("c:2000")  # evicts b
    assert len(cache) == 2 and verify.calls == 3
    cache.verify("a:2000")
    assert verify.calls == 3
    cache.verify("b:2000")
    assert verify.calls == 4


def test_a_bad_token_is_never_cached_and_tokens_stay_out_of_repr() -> None:
    verify = Verifier()
    cache = TokenCache(verify, clock=Clock())
    for _ in range(2):
        with pytest.raises(AuthError):
            cache.verify("garbage")
    assert verify.calls == 2 and len(cache) == 0
    cache.verify("secret-sub:2000")
    assert "secret" not in repr(cache)
