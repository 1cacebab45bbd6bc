"""Hostile and broken requests: each gets its PROTOCOL status as application/problem+json, and
nothing changes, neither in SQL nor in the engine. No input yields a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from quart import Quart

from ..helpers import (
    SECRET,
    Api,
    Reply,
    assert_problem,
    board,
    serving,
    sql_matches,
    sql_players,
)

# --- tokens made by hand ---------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: Any) -> str:
    return b64(json.dumps(obj).encode())


def jwt(
    payload: Any, *, secret: str = SECRET, alg: str = "HS256", header: dict[str, Any] | None = None
) -> str:
    """An HMAC-signed JWT of any payload (or, with alg "none", an unsigned one)."""
    signing_input = f"{segment(header or {'alg': alg, 'typ': 'JWT'})}.{segment(payload)}"
    if alg == "none":
        return signing_input + "."
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "mallory", "scope": "matches:write admin", "iat": now, "exp": now + 600, **extra}


def tampered_signature(token: str) -> str:
    head, body, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    return f"{head}.{body}.{flipped}"


def escalated(token: str) -> str:
    """The payload swapped for one with more scopes, the original signature kept."""
    head, _, signature = token.split(".")
    return f"{head}.{segment(claims(sub='game-server'))}.{signature}"


# --- the state a hostile request must not change -----------------------------------------------


async def seed(api: Api) -> None:
    await api.create("live", "a", "b")
    assert (await api.post("/api/matches/live/start")).status == 200
    await api.play("done", "a", "c", "c")
    await api.create("planned", "b", "c")


async def state(api: Api) -> tuple[Any, ...]:
    entries = [(rank, entry) for rank, entry in await board(api.rt.engine)]
    return (
        entries,
        await sql_matches(api.rt.store),
        await sql_players(api.rt.store),
        await api.rt.engine.head(),
    )


@pytest.fixture(name="seeded")
async def _seeded(api: Api) -> Api:
    await seed(api)
    return api


JSON = {"Content-Type": "application/json"}
DEPTH = 100_000


def cases(api: Api) -> list[tuple[str, str, str, dict[str, Any], int]]:
    """(what, method, path, request options, status)."""
    create = "/api/matches"
    result = "/api/matches/live/result"
    progress = "/api/matches/live/progress"
    publish = "/api/publish"
    expired = api.token("game-server", "matches:write", ttl_seconds=-60)
    return [
        # 400: not JSON
        ("truncated JSON", "POST", create, {"data": '{"player_ids": ["x", ', "headers": JSON}, 400),
        (
            "not UTF-8",
            "POST",
            create,
            {"data": b'{"player_ids": ["\xff\xfe", "y"]}', "headers": JSON},
            400,
        ),
        ("empty body", "POST", result, {"data": b"", "headers": JSON}, 400),
        ("deep nesting", "POST", create, {"data": "[" * DEPTH + "]" * DEPTH, "headers": JSON}, 400),
        (
            "NaN",
            "POST",
            progress,
            {"data": '{"score": {"a": 1}, "detail": {"x": NaN}}', "headers": JSON},
            400,
        ),
        (
            "Infinity",
            "POST",
            publish,
            {
                "data": '{"room": "matches", "event": "announcement", "data": {"x": 1e400}}',
                "headers": JSON,
                "token": "admin",
            },
            400,
        ),
        (
            "unknown room",
            "POST",
            publish,
            {"body": {"room": "lobby", "event": "announcement", "data": {}}, "token": "admin"},
            400,
        ),
        # 415: not declared as JSON
        (
            "text/plain",
            "POST",
            create,
            {"data": '{"player_ids": ["x", "y"]}', "headers": {"Content-Type": "text/plain"}},
            415,
        ),
        (
            "form",
            "POST",
            result,
            {
                "data": "winner_id=a",
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            },
            415,
        ),
        ("no content type", "POST", create, {"data": '{"player_ids": ["x", "y"]}'}, 415),
        # 422: JSON that breaks the schema
        ("a list", "POST", create, {"body": [["x", "y"]]}, 422),
        ("null", "POST", result, {"data": "null", "headers": JSON}, 422),
        ("one player", "POST", create, {"body": {"player_ids": ["x"]}}, 422),
        ("three players", "POST", create, {"body": {"player_ids": ["x", "y", "z"]}}, 422),
        ("same player twice", "POST", create, {"body": {"player_ids": ["x", "x"]}}, 422),
        ("bad id", "POST", create, {"body": {"player_ids": ["x y", "z"]}}, 422),
        ("id with newline", "POST", create, {"body": {"player_ids": ["x\n", "z"]}}, 422),
        ("long id", "POST", create, {"body": {"player_ids": ["x" * 65, "z"]}}, 422),
        ("unknown field", "POST", create, {"body": {"player_ids": ["x", "y"], "k": 1}}, 422),
        (
            "bad time",
            "POST",
            create,
            {"body": {"player_ids": ["x", "y"], "scheduled_at": "soon"}},
            422,
        ),
        (
            "time without UTC",
            "POST",
            create,
            {"body": {"player_ids": ["x", "y"], "scheduled_at": "0001-01-01T00:00:00+05:00"}},
            422,
        ),
        ("winner and draw", "POST", result, {"body": {"winner_id": "a", "draw": True}}, 422),
        ("no outcome", "POST", result, {"body": {}}, 422),
        ("draw false", "POST", result, {"body": {"draw": False}}, 422),
        ("draw as text", "POST", result, {"body": {"draw": "yes"}}, 422),
        ("winner not playing", "POST", result, {"body": {"winner_id": "c"}}, 422),
        ("score as text", "POST", progress, {"body": {"score": {"a": "one"}}}, 422),
        ("score of a stranger", "POST", progress, {"body": {"score": {"zed": 1}}}, 422),
        (
            "publish other event",
            "POST",
            publish,
            {"body": {"room": "matches", "event": "match:result", "data": {}}, "token": "admin"},
            422,
        ),
        (
            "rename to nothing",
            "PUT",
            "/api/players/a",
            {"body": {"name": ""}, "token": "admin"},
            422,
        ),
        # 413: too large
        (
            "body over 1 MiB",
            "POST",
            create,
            {"body": {"player_ids": ["x", "y"], "pad": "x" * (1024 * 1024)}},
            413,
        ),
        (
            "publish data over 16 KiB",
            "POST",
            publish,
            {
                "body": {"room": "matches", "event": "announcement", "data": {"x": "y" * 16_400}},
                "token": "admin",
            },
            413,
        ),
        # 404 / 409
        ("unknown match", "POST", "/api/matches/nope/result", {"body": {"draw": True}}, 404),
        ("unknown match start", "POST", "/api/matches/nope/start", {}, 404),
        ("id outside the alphabet", "POST", "/api/matches/n%20o/cancel", {}, 404),
        ("start a completed match", "POST", "/api/matches/done/start", {}, 409),
        ("another result", "POST", "/api/matches/done/result", {"body": {"winner_id": "a"}}, 409),
        (
            "progress before start",
            "POST",
            "/api/matches/planned/progress",
            {"body": {"score": {"b": 1}}},
            409,
        ),
        (
            "same id, other players",
            "POST",
            create,
            {"body": {"match_id": "done", "player_ids": ["a", "b"]}},
            409,
        ),
        # 401: no usable token
        ("no token", "POST", create, {"body": {"player_ids": ["x", "y"]}, "token": None}, 401),
        (
            "Basic auth",
            "POST",
            create,
            {
                "body": {"player_ids": ["x", "y"]},
                "token": None,
                "headers": {"Authorization": "Basic YTpi"},
            },
            401,
        ),
        (
            "empty bearer",
            "POST",
            create,
            {
                "body": {"player_ids": ["x", "y"]},
                "token": None,
                "headers": {"Authorization": "Bearer "},
            },
            401,
        ),
        (
            "garbage token",
            "POST",
            create,
            {"body": {"player_ids": ["x", "y"]}, "token": "a.b.c"},
            401,
        ),
        (
            "expired token",
            "POST",
            create,
            {"body": {"player_ids": ["x", "y"]}, "token": expired},
            401,
        ),
        (
            "tampered signature",
            "POST",
            create,
            {"body": {"player_ids": ["x", "y"]}, "token": tampered_signature(api.writer)},
            401,
        ),
        (
            "escalated payload",
            "POST",
            publish,
            {
                "body": {"room": "matches", "event": "announcement", "data": {}},
                "token": escalated(api.writer),
            },
            401,
        ),
        (
            "alg none",
            "POST",
            publish,
            {
                "body": {"room": "matches", "event": "announcement", "data": {}},
                "token": jwt(claims(), alg="none"),
            },
            401,
        ),
        (
            "alg none, signed anyway",
            "POST",
            create,
            {"body": {"player_ids": ["x", "y"]}, "token": jwt(claims(), header={"alg": "none"})},
            401,
        ),
        (
            "another secret",
            "POST",
            create,
            {"body": {"player_ids": ["x", "y"]}, "token": jwt(claims(), secret="other" * 8)},
            401,
        ),
        (
            "algorithm not allowed",
            "POST",
            create,
            {"body": {"player_ids": ["x", "y"]}, "token": jwt(claims(), alg="HS512")},
            401,
        ),
        (
            "no exp",
            "POST",
            create,
            {
                "body": {"player_ids": ["x", "y"]},
                "token": jwt({k: v for k, v in claims().items() if k != "exp"}),
            },
            401,
        ),
        (
            "no sub",
            "POST",
            create,
            {
                "body": {"player_ids": ["x", "y"]},
                "token": jwt({k: v for k, v in claims().items() if k != "sub"}),
            },
            401,
        ),
        (
            "sub not a string",
            "POST",
            create,
            {"body": {"player_ids": ["x", "y"]}, "token": jwt(claims(sub=42))},
            401,
        ),
        (
            "exp beyond floats",
            "POST",
            create,
            {"body": {"player_ids": ["x", "y"]}, "token": jwt(claims(exp=10**400))},
            401,
        ),
        (
            "not yet valid",
            "POST",
            create,
            {"body": {"player_ids": ["x", "y"]}, "token": jwt(claims(nbf=int(time.time()) + 600))},
            401,
        ),
        # 403: a valid token without the scope
        (
            "reader creates",
            "POST",
            create,
            {"body": {"player_ids": ["x", "y"]}, "token": "reader"},
            403,
        ),
        (
            "writer publishes",
            "POST",
            publish,
            {"body": {"room": "matches", "event": "announcement", "data": {}}},
            403,
        ),
        (
            "player renames another",
            "PUT",
            "/api/players/a",
            {"body": {"name": "A"}, "token": api.token("b")},
            403,
        ),
    ]


async def test_hostile_requests_get_their_status_and_change_nothing(seeded: Api) -> None:
    api = seeded
    before = await state(api)
    wrong = []
    for what, method, path, options, status in cases(api):
        options = dict(options)
        kwargs: dict[str, Any] = {"token": options.pop("token", "writer")}
        reply = await api.request(method, path, options.pop("body", None), **kwargs, **options)
        try:
            assert_problem(reply, status)
            if status == 422:
                assert reply.body.get("errors"), "a 422 lists its errors"
            if status == 401:
                assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        except AssertionError:
            wrong.append((what, reply.status, reply.body))
    assert wrong == [], "\n".join(map(repr, wrong))
    assert await state(api) == before


async def test_schema_violations_list_their_errors(seeded: Api) -> None:
    reply = await seeded.post("/api/matches", {"player_ids": ["x y"], "extra": 1})
    assert_problem(reply, 422)
    locations = {tuple(error["loc"]) for error in reply.body["errors"]}
    assert ("extra",) in locations and any(loc[0] == "player_ids" for loc in locations)
    assert all(set(error) >= {"loc", "msg", "type"} for error in reply.body["errors"])


async def test_publish_data_at_the_limit_is_accepted(seeded: Api) -> None:
    # {"x":"yyy..."} is 8 bytes of JSON around the string: exactly 16 KiB in all.
    data = {"x": "y" * (16 * 1024 - 8)}
    reply = await seeded.post(
        "/api/publish", {"room": "matches", "event": "announcement", "data": data}, token="admin"
    )
    assert reply.status == 202, reply


# --- audience and issuer ---------------------------------------------------------------------


@pytest.fixture(name="audience_api")
async def _audience_api(make_app: Callable[..., Quart]) -> AsyncIterator[Api]:
    async with serving(make_app(jwt_audience="love-rank-pulse", jwt_issuer="https://idp")) as api:
        await seed(api)
        yield api


async def test_audience_and_issuer_are_checked(audience_api: Api) -> None:
    api = audience_api
    before = await state(api)
    good = {"aud": "love-rank-pulse", "iss": "https://idp"}
    for what, extra in [
        ("wrong audience", {**good, "aud": "another-service"}),
        ("no audience", {"iss": "https://idp"}),
        ("wrong issuer", {**good, "iss": "https://evil"}),
        ("no issuer", {"aud": "love-rank-pulse"}),
    ]:
        reply = await api.post(
            "/api/matches", {"player_ids": ["x", "y"]}, token=jwt(claims(**extra))
        )
        assert_problem(reply, 401)
        assert reply.headers["WWW-Authenticate"].startswith("Bearer"), what
    assert await state(api) == before
    # the right audience and issuer pass (and the service's own tokens carry them)
    reply = await api.post("/api/matches", {"player_ids": ["x", "y"]}, token=jwt(claims(**good)))
    assert reply.status == 201
    assert (await api.get("/api/leaderboard")).status == 200


async def test_reads_need_a_token_unless_public(make_app: Callable[..., Quart]) -> None:
    async with serving(make_app()) as api:
        reply = await api.get("/api/leaderboard", token=None)
        assert_problem(reply, 401)
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    async with serving(make_app(public_read=True)) as api:
        assert (await api.get("/api/leaderboard", token=None)).status == 200
        # public reads do not open writes
        assert_problem(await api.post("/api/matches", {"player_ids": ["x", "y"]}, token=None), 401)


async def test_no_dev_token_endpoint_with_a_secret(memory_api: Api) -> None:
    reply = await memory_api.post("/api/dev/token", {"sub": "x", "scope": "admin"}, token=None)
    assert_problem(reply, 404)
    document = (await memory_api.get("/openapi.json", token=None)).body
    assert "/api/dev/token" not in document["paths"]


async def test_dev_token_endpoint_in_development_mode(make_app: Callable[..., Quart]) -> None:
    async with serving(make_app(jwt_secret=None)) as api:
        reply = await api.post("/api/dev/token", {"sub": "ann", "scope": "admin"}, token=None)
        assert reply.status == 200
        identity = api.rt.auth.verify(reply.body["access_token"])
        assert (identity.sub, identity.has("admin")) == ("ann", True)
        assert "/api/dev/token" in (await api.get("/openapi.json", token=None)).body["paths"]


# --- fuzzing: whatever comes in, never a 500 --------------------------------------------------

ids = st.sampled_from(["a", "b", "c", "x", "live", "done", "planned", "", "a b", "ä", "-a"])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | ids,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10) | ids, inner, max_size=4)
    ),
    max_leaves=20,
)
plausible = st.fixed_dictionaries(
    {},
    optional={
        "match_id": ids | json_values,
        "player_ids": st.lists(ids, max_size=3) | json_values,
        "scheduled_at": st.datetimes().map(str) | st.text(max_size=30) | json_values,
        "winner_id": ids | json_values,
        "draw": st.booleans() | json_values,
        "score": st.dictionaries(ids, st.integers()) | json_values,
        "detail": json_values,
        "room": st.sampled_from(["matches", "presence", "player:a", "match:x", "x", ""]),
        "event": st.sampled_from(["announcement", "match:result"]) | st.text(max_size=10),
        "data": json_values,
        "name": st.text(max_size=70) | json_values,
        "sub": ids,
    },
)
bodies = (
    plausible.map(lambda body: json.dumps(body).encode())
    | json_values.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=64)
    | st.text(max_size=64).map(str.encode)
)
targets = st.sampled_from(
    [
        ("POST", "/api/matches"),
        ("POST", "/api/matches/live/start"),
        ("POST", "/api/matches/live/progress"),
        ("POST", "/api/matches/live/result"),
        ("POST", "/api/matches/planned/result"),
        ("POST", "/api/matches/done/result"),
        ("POST", "/api/matches/planned/cancel"),
        ("POST", "/api/publish"),
        ("POST", "/api/subscribe"),
        ("PUT", "/api/players/a"),
        ("POST", "/api/dev/token"),
    ]
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/json-patch+json",
    ]
)


async def check_reply(reply: Reply) -> None:
    assert reply.status < 500, reply
    if reply.status >= 400:
        assert reply.content_type == "application/problem+json", reply


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(target=targets, body=bodies, content_type=content_types)
async def test_no_body_yields_a_500(
    seeded: Api, target: tuple[str, str], body: bytes, content_type: str
) -> None:
    method, path = target
    reply = await seeded.request(
        method, path, data=body, token="admin", headers={"Content-Type": content_type}
    )
    await check_reply(reply)


token_payloads = (
    st.dictionaries(
        st.sampled_from(["sub", "scope", "exp", "nbf", "iat", "aud", "iss", "jti"])
        | st.text(max_size=5),
        json_values | st.integers(min_value=-(10**30), max_value=10**400),
        max_size=6,
    )
    | json_values
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    token=(
        token_payloads.map(jwt)  # validly signed, whatever the claims
        | token_payloads.map(lambda p: jwt(p, alg="none"))
        | st.text(max_size=80)
        | st.tuples(json_values, json_values).map(lambda hp: f"{segment(hp[0])}.{segment(hp[1])}.x")
    ),
    scheme=st.sampled_from(["Bearer", "bearer", "Basic", ""]),
)
async def test_no_token_yields_a_500(seeded: Api, token: str, scheme: str) -> None:
    header = f"{scheme} {token}".strip()
    assume(not set(header) & set("\r\n\x00"))  # no HTTP client can send these in a header
    try:
        header.encode("latin-1")
    except UnicodeEncodeError:
        header = header.encode().decode("latin-1")
    reply = await seeded.request(
        "POST", "/api/matches/planned/start", token=None, headers={"Authorization": header}
    )
    await check_reply(reply)
    if reply.status == 401:
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "db_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_player_names_on_both_databases(
    make_app: Callable[..., Quart], database_url: str
) -> None:
    """Odd but valid names round-trip exactly; names no database can store are refused (422),
    never a 500 from the database driver."""
    async with serving(make_app(database_url=database_url)) as api:
        await api.create("m1", "a", "b")
        for name in [
            "<script>alert(1)</script>",
            "Zoë 🏆" * 8,
            "\u202eevil",
            "a\u2028b",
            "😀" * 64,
            'quote " and \\ backslash',
        ]:
            reply = await api.put("/api/players/a", {"name": name}, token="admin")
            assert (reply.status, reply.body["name"]) == (200, name.strip())
            assert (await api.get("/api/players/a")).body["name"] == name.strip()
        before = await state(api)
        for name in ["nul\x00byte", "line\nbreak", "bell\x07", "\ud800"]:
            reply = await api.put("/api/players/a", {"name": name}, token="admin")
            assert_problem(reply, 422)
        assert await state(api) == before
