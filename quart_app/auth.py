"""JWT verification (authlib), scopes, and where a token may come from.

All JWT code lives here: authlib.jose is slated to move to joserfc, and one module is one
place to change.
"""

from __future__ import annotations

import logging
import secrets
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

with warnings.catch_warnings():
    # authlib.jose announces its move to joserfc on import; the API we use is still supported.
    # authlib.deprecate installs an "always" filter when imported: import it first, so that
    # our "ignore" comes after it and wins (else every `rankpulse` start prints the warning).
    import authlib.deprecate  # noqa: F401

    warnings.simplefilter("ignore")
    from authlib.jose import JsonWebKey, JsonWebToken
    from authlib.jose.errors import JoseError

from .config import Settings
from .jwks import JwksFetcher
from .services.errors import Unavailable

log = logging.getLogger(__name__)

SCOPE_WRITE = "matches:write"
# The least time between two JWKS fetches triggered by unknown key ids.
JWKS_REFETCH_SECONDS = 60.0
SCOPE_ADMIN = "admin"


def check_public_key(text: str) -> None:
    """JWT_PUBLIC_KEY, checked when the configuration is read: ValueError unless it loads."""
    try:
        JsonWebKey.import_key(text)
    except Exception:  # (authlib raises ValueError, JoseError or cryptography's errors)
        raise ValueError("not a PEM or JWK public key") from None


class AuthError(Exception):
    """No usable token: the answer is 401 with WWW-Authenticate: Bearer."""


class KeysUnavailable(Unavailable):
    """No JWKS key set was ever loaded, so no token can be checked yet: 503 with Retry-After
    (not 401: the token may well be good)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the identity provider's keys are not loaded yet; retry")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str | None  # None: an anonymous reader (PUBLIC_READ=true)
    scopes: frozenset[str] = field(default_factory=frozenset)
    expires_at: float | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes or SCOPE_ADMIN in self.scopes

    def may_read_player(self, player_id: str) -> bool:
        return self.sub == player_id or SCOPE_ADMIN in self.scopes


ANONYMOUS = Identity(sub=None)


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dev_mode = settings.dev_mode
        self._jwt = JsonWebToken(settings.algorithms)
        if self.dev_mode:
            self._key: Any = secrets.token_urlsafe(32)
        elif settings.jwt_secret:
            self._key = settings.jwt_secret
        elif settings.jwt_public_key:
            self._key = JsonWebKey.import_key(settings.jwt_public_key)
        else:
            self._key = None  # JWKS: fetched in the background (jwks.py), never on a request
        self.jwks: JwksFetcher | None = None
        if settings.jwt_jwks_url and self._key is None:
            self.jwks = JwksFetcher(settings.jwt_jwks_url, refetch_seconds=JWKS_REFETCH_SECONDS)
            self.jwks.on_load(self._load_key_set)
        self._claims_options: dict[str, Any] = {
            "exp": {"essential": True},
            "sub": {"essential": True},
        }
        if settings.jwt_audience:
            self._claims_options["aud"] = {"essential": True, "value": settings.jwt_audience}
        if settings.jwt_issuer:
            self._claims_options["iss"] = {"essential": True, "value": settings.jwt_issuer}

    async def start(self) -> None:
        """Begin fetching the JWKS in the background (a no-op without JWT_JWKS_URL)."""
        if self.jwks is not None:
            self.jwks.start()

    async def stop(self) -> None:
        if self.jwks is not None:
            await self.jwks.stop()

    def _load_key_set(self, document: dict[str, Any]) -> None:
        self._key = JsonWebKey.import_key_set(document)

    def verify(self, token: str) -> Identity:
        """Check a token against the keys at hand; never waits for the identity provider."""
        jwks = self.jwks
        if jwks is not None and self._key is None:
            jwks.start()  # (started with the app; this covers an Authenticator used alone)
            raise KeysUnavailable(jwks.retry_after())
        try:
            try:
                claims = self._jwt.decode(token, self._key, claims_options=self._claims_options)
            except ValueError:
                # A kid the cached set lacks: the keys may have rotated. Ask for a refetch in
                # the background (rate-limited there); this token is refused meanwhile.
                if jwks is not None:
                    jwks.want_refresh()
                raise
            claims.validate(leeway=self.settings.jwt_leeway)
        except (JoseError, ValueError, TypeError, KeyError, OSError) as exc:
            raise AuthError(f"invalid token: {type(exc).__name__}") from None
        sub, scope = claims.get("sub"), claims.get("scope", "")
        if not isinstance(sub, str) or not isinstance(scope, str):
            raise AuthError("invalid token: sub and scope must be strings")
        try:
            expires_at = float(claims["exp"])
        except OverflowError:  # an integer beyond floats passes validate(): it is "never"
            raise AuthError("invalid token: exp is out of range") from None
        return Identity(sub=sub, scopes=frozenset(scope.split()), expires_at=expires_at)

    def issue(self, sub: str, scope: str = "", ttl_seconds: int = 3600) -> str:
        """Sign a token with the configured HMAC secret (dev mode, `rankpulse token`)."""
        if not isinstance(self._key, str):
            raise RuntimeError("tokens can be minted only with an HMAC secret")
        algorithm = next((a for a in self.settings.algorithms if a.startswith("HS")), "HS256")
        now = int(time.time())
        payload = {"sub": sub, "scope": scope, "iat": now, "exp": now + ttl_seconds}
        if self.settings.jwt_audience:
            payload["aud"] = self.settings.jwt_audience
        if self.settings.jwt_issuer:
            payload["iss"] = self.settings.jwt_issuer
        token: bytes = self._jwt.encode({"alg": algorithm, "typ": "JWT"}, payload, self._key)
        return token.decode()

    def identify(self, token: str | None) -> Identity:
        """The caller's identity; anonymous only when PUBLIC_READ allows it."""
        if token:
            return self.verify(token)
        if self.settings.public_read:
            return ANONYMOUS
        raise AuthError("a bearer token is required")
