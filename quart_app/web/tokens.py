"""Where a request's token comes from (PROTOCOL section 5), for every endpoint alike."""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

from ..auth import AuthError


def token_from(
    authorization: str | None,
    query_token: str | None,
    cookie_header: str | None,
    *,
    allow_query: bool,
) -> str | None:
    """`Authorization: Bearer` everywhere; the `access_token` query parameter or cookie only
    where `allow_query` (the stream endpoints, which EventSource and WebSocket cannot give
    headers; never a POST, so a cookie cannot forge an action)."""
    header = authorization or ""
    kind, _, token = header.partition(" ")
    if kind.lower() == "bearer" and token.strip():
        return token.strip()
    if header:
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    if not allow_query:
        return None
    if query_token:
        return query_token
    try:
        cookie = SimpleCookie(cookie_header or "")
    except CookieError:
        return None
    return cookie["access_token"].value if "access_token" in cookie else None
