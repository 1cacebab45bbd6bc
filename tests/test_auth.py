"""Asymmetric keys: RS256/ES256 with a public key, and a JWKS endpoint with key rotation."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from authlib.jose import JsonWebKey, JsonWebToken
from quart import Quart

from quart_app import auth
from quart_app.auth import Authenticator, AuthError, KeysUnavailable
from quart_app.config import load_settings

from .helpers import eventually


def _sign(key: Any, alg: str, kid: str | None = None, **claims: Any) -> str:
    header = {"alg": alg, **({"kid": kid} if kid else {})}
    payload = {"sub": "ann", "scope": "matches:write", "exp": int(time.time()) + 60, **claims}
    return JsonWebToken([alg]).encode(header, payload, key).decode()


@pytest.mark.parametrize(("alg", "kty", "crv"), [("RS256", "RSA", 2048), ("ES256", "EC", "P-256")])
def test_a_public_key_verifies_and_nothing_else_does(
    clean_env: None, alg: str, kty: str, crv: Any
) -> None:
    private = JsonWebKey.generate_key(kty, crv, is_private=True)
    public_pem = private.as_pem(is_private=False).decode()
    authenticator = Authenticator(load_settings(jwt_algorithms=alg, jwt_public_key=public_pem))
    identity = authenticator.verify(_sign(private, alg))
    assert (identity.sub, identity.has("matches:write")) == ("ann", True)
    stranger = JsonWebKey.generate_key(kty, crv, is_private=True)
    with pytest.raises(AuthError):
        authenticator.verify(_sign(stranger, alg))
    with pytest.raises(AuthError):  # another algorithm than the pinned one
        authenticator.verify(_sign(b"k" * 32, "HS256"))


class JwksServer:
    """A JWKS endpoint on a free port that a test can take down or make hang.

    `keys`: what it serves; `mode`: "up", "down" (answers 503) or "hang" (holds the request
    until the test ends); `hits`: how often it was asked."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.mode = "up"
        self.hits = 0
        self.hanging = threading.Event()  # set while a request is being held
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                server.hits += 1
                if server.mode == "hang":
                    server.hanging.set()
                    server.release.wait(30)
                    return
                if server.mode == "down":
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_port}/jwks.json"


@pytest.fixture(name="jwks")
def _jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    thread = threading.Thread(target=server.http.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.http.shutdown()
    server.http.server_close()


def _public_jwk(private: Any, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = private.as_dict(is_private=False)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


async def _loaded(authenticator: Authenticator, token: str) -> bool:
    try:
        authenticator.verify(token)
    except KeysUnavailable:
        return False
    return True


async def test_jwks_keys_are_fetched_in_the_background_and_a_rotation_is_picked_up(
    clean_env: None, jwks: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "JWKS_REFETCH_SECONDS", 4.0)  # (60 s by default)
    old = JsonWebKey.generate_key("RSA", 2048, is_private=True)
    jwks.keys = [_public_jwk(old, "k1")]
    authenticator = Authenticator(load_settings(jwt_algorithms="RS256", jwt_jwks_url=jwks.url))
    await authenticator.start()
    try:
        token = _sign(old, "RS256", "k1")
        await eventually(lambda: _loaded(authenticator, token), 10, "the key set to load")
        assert authenticator.verify(token).sub == "ann"
        assert jwks.hits == 1  # cached

        new = JsonWebKey.generate_key("RSA", 2048, is_private=True)
        jwks.keys = [_public_jwk(old, "k1"), _public_jwk(new, "k2")]
        rotated = _sign(new, "RS256", "k2")
        # Within the refetch interval, unknown kids are refused (401) and ask for a refetch
        # that waits for the interval: junk kids cannot make us hammer the identity provider.
        for _ in range(20):
            with pytest.raises(AuthError):
                authenticator.verify(rotated)
            await asyncio.sleep(0)
        assert jwks.hits == 1
        # With the interval over, the pending refetch runs and the new key verifies.

        async def rotated_ok() -> bool:
            try:
                return authenticator.verify(rotated).sub == "ann"
            except AuthError:
                return False

        await eventually(rotated_ok, 10, "the rotated key to be picked up")
        assert jwks.hits == 2
        forged = JsonWebKey.generate_key("RSA", 2048, is_private=True)
        with pytest.raises(AuthError):
            authenticator.verify(_sign(forged, "RS256", "k2"))
    finally:
        await authenticator.stop()


def _jwks_app(make_app: Callable[..., Quart], url: str) -> Quart:
    return make_app(jwt_secret=None, jwt_algorithms="RS256", jwt_jwks_url=url)


async def test_503_with_retry_after_until_a_key_set_was_loaded_then_recovery(
    make_app: Callable[..., Quart], jwks: JwksServer
) -> None:
    key = JsonWebKey.generate_key("RSA", 2048, is_private=True)
    jwks.keys = [_public_jwk(key, "k1")]
    jwks.mode = "down"
    bearer = {"Authorization": f"Bearer {_sign(key, 'RS256', 'k1')}"}
    async with _jwks_app(make_app, jwks.url).test_app() as app:
        client = app.test_client()
        for path in ("/api/leaderboard", "/api/players/ann"):
            response = await client.get(path, headers=bearer)
            assert response.status_code == 503, path
            assert int(response.headers["Retry-After"]) >= 1
            assert response.mimetype == "application/problem+json"
        # the SSE endpoint (a raw ASGI handler) says the same
        response = await client.get("/api/events?rooms=matches", headers=bearer)
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1
        # Many requests while the provider is down: the fetcher backs off, it does not fetch
        # once per request.
        for _ in range(30):
            assert (await client.get("/api/leaderboard", headers=bearer)).status_code == 503
        assert jwks.hits <= 5, jwks.hits
        # no token at all is still a 401, not a 503
        assert (await client.get("/api/leaderboard")).status_code == 401

        jwks.mode = "up"

        async def recovered() -> bool:
            return (await client.get("/api/leaderboard", headers=bearer)).status_code == 200

        # (backoff: the next attempt is at most BACKOFF_CAP s away; far less here)
        await eventually(recovered, 40, "requests to pass once the provider is back")
        # a token signed with an unknown kid is a 401 now that keys are loaded
        stranger = JsonWebKey.generate_key("RSA", 2048, is_private=True)
        bad = {"Authorization": f"Bearer {_sign(stranger, 'RS256', 'k9')}"}
        assert (await client.get("/api/leaderboard", headers=bad)).status_code == 401


async def test_requests_are_answered_promptly_while_the_jwks_fetch_hangs(
    make_app: Callable[..., Quart], jwks: JwksServer
) -> None:
    key = JsonWebKey.generate_key("RSA", 2048, is_private=True)
    jwks.mode = "hang"
    bearer = {"Authorization": f"Bearer {_sign(key, 'RS256', 'k1')}"}
    async with _jwks_app(make_app, jwks.url).test_app() as app:
        client = app.test_client()
        assert await asyncio.to_thread(jwks.hanging.wait, 10), "the fetch never started"

        async def timed(path: str, **kwargs: Any) -> tuple[int, float]:
            started = time.monotonic()
            response = await client.get(path, **kwargs)
            return response.status_code, time.monotonic() - started

        # A request that needs the keys, and liveness beside it: neither waits for the fetch.
        (needs_keys, t_keys), (health, t_health) = await asyncio.gather(
            timed("/api/leaderboard", headers=bearer), timed("/healthz")
        )
        assert (needs_keys, health) == (503, 200)
        assert t_health < 0.2 and t_keys < 0.2, (t_health, t_keys)
        jwks.release.set()
