"""Where the generator's tokens come from: given, minted with the service's HMAC secret
(as quart_app.auth.Authenticator.issue does), or asked of a development-mode instance."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import warnings

from .wire import Target

PUBLISHER_SUB = "loadtest-publisher"


def subscriber_sub(index: int) -> str:
    return f"loadtest-{index}"


def mint(
    secret: str,
    sub: str,
    scope: str = "",
    ttl_seconds: int = 6 * 3600,
    *,
    algorithm: str = "HS256",
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    with warnings.catch_warnings():
        # authlib.jose announces its move to joserfc on import; the API used is supported.
        warnings.simplefilter("ignore")
        from authlib.jose import JsonWebToken
    now = int(time.time())
    payload: dict[str, object] = {"sub": sub, "scope": scope, "iat": now, "exp": now + ttl_seconds}
    if audience:
        payload["aud"] = audience
    if issuer:
        payload["iss"] = issuer
    token: bytes = JsonWebToken([algorithm]).encode(
        {"alg": algorithm, "typ": "JWT"}, payload, secret
    )
    return token.decode()


def dev_token(target: Target, sub: str, scope: str = "", ttl_seconds: int = 6 * 3600) -> str:
    """POST /api/dev/token of an instance in development mode (no JWT_SECRET): each such
    instance signs with its own random secret, so a token is good on its instance only."""
    body = json.dumps({"sub": sub, "scope": scope, "ttl_seconds": ttl_seconds}).encode()
    req = urllib.request.Request(
        f"{target.url}/api/dev/token",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return str(json.load(response)["access_token"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise SystemExit(
                f"{target.url} is not in development mode (POST /api/dev/token is 404): "
                "pass --token or --jwt-secret"
            ) from None
        raise SystemExit(f"{target.url}: POST /api/dev/token answered {exc.code}") from None
    except OSError as exc:
        raise SystemExit(f"{target.url}: cannot get a development token: {exc}") from None


class Tokens:
    """Subscriber tokens per (instance, identity) and the publisher's admin token."""

    def __init__(
        self,
        targets: list[Target],
        identities: int,
        *,
        token: str | None,
        publish_token: str | None,
        secret: str | None,
        algorithm: str,
        audience: str | None,
        issuer: str | None,
        anonymous: bool,
        publish_target: Target,
    ) -> None:
        self.identities = max(1, identities)
        self._by_target: list[list[str | None]] = []
        if token or anonymous:
            self._by_target = [[token] for _ in targets]
            self.publisher = publish_token or token
        elif secret:
            minted = [
                mint(
                    secret,
                    subscriber_sub(i),
                    "",
                    algorithm=algorithm,
                    audience=audience,
                    issuer=issuer,
                )
                for i in range(self.identities)
            ]
            self._by_target = [list[str | None](minted) for _ in targets]
            self.publisher = publish_token or mint(
                secret,
                PUBLISHER_SUB,
                "admin",
                algorithm=algorithm,
                audience=audience,
                issuer=issuer,
            )
        else:
            self._by_target = [
                [dev_token(t, subscriber_sub(i)) for i in range(self.identities)] for t in targets
            ]
            self.publisher = publish_token or dev_token(publish_target, PUBLISHER_SUB, "admin")
        if not self.publisher:
            self.publisher = None

    def subscriber(self, target_index: int, client_index: int) -> str | None:
        tokens = self._by_target[target_index]
        return tokens[client_index % len(tokens)]
