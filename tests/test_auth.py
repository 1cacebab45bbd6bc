"""Asymmetric keys: RS256/ES256 with a public key, and a JWKS endpoint with key rotation."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from authlib.jose import JsonWebKey, JsonWebToken

from quart_app import auth
from quart_app.auth import Authenticator, AuthError
from quart_app.config import load_settings


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


@pytest.fixture(name="jwks")
def _jwks() -> Iterator[dict[str, Any]]:
    """A JWKS endpoint on a free port; `state["keys"]` is what it serves, `state["hits"]`
    how often it was asked."""
    state: dict[str, Any] = {"keys": [], "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            state["hits"] += 1
            body = json.dumps({"keys": state["keys"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_port}/jwks.json"
    yield state
    server.shutdown()
    server.server_close()


def _public_jwk(private: Any, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = private.as_dict(is_private=False)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def test_jwks_keys_are_fetched_and_a_rotation_is_picked_up(
    clean_env: None, jwks: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = JsonWebKey.generate_key("RSA", 2048, is_private=True)
    jwks["keys"] = [_public_jwk(old, "k1")]
    authenticator = Authenticator(load_settings(jwt_algorithms="RS256", jwt_jwks_url=jwks["url"]))
    assert authenticator.verify(_sign(old, "RS256", "k1")).sub == "ann"
    assert authenticator.verify(_sign(old, "RS256", "k1")).sub == "ann"
    assert jwks["hits"] == 1  # cached

    new = JsonWebKey.generate_key("RSA", 2048, is_private=True)
    jwks["keys"] = [_public_jwk(old, "k1"), _public_jwk(new, "k2")]
    # Within the refetch interval an unknown kid is refused without asking the endpoint...
    with pytest.raises(AuthError):
        authenticator.verify(_sign(new, "RS256", "k2"))
    assert jwks["hits"] == 1
    # ...after it, the unknown kid triggers one refetch and verifies.
    monkeypatch.setattr(auth, "JWKS_REFETCH_SECONDS", 0.0)
    assert authenticator.verify(_sign(new, "RS256", "k2")).sub == "ann"
    assert jwks["hits"] == 2
    forged = JsonWebKey.generate_key("RSA", 2048, is_private=True)
    with pytest.raises(AuthError):
        authenticator.verify(_sign(forged, "RS256", "k2"))
