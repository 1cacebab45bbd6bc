"""POST /api/matches/{id}/result outside Quart (web/result_route.py): the same answers as
Quart gives, for the results it takes and for every request it hands back (PROTOCOL 7), on
the test client and on a real server's keep-alive connections (its one-write answers)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import h11
import pytest
from quart import Quart

from ..helpers import Api, assert_problem, serving
from ..http_wire import read_response
from ..services import LiveServer


async def _played(api: Api, match_id: str) -> None:
    assert (await api.create(match_id, "ann", "bob"))["match_id"] == match_id


async def test_a_result_is_answered_without_quart_s_request_cycle(
    memory_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _played(memory_api, "r1")
    dispatched: list[str] = []
    real = Quart.full_dispatch_request

    async def counting(self: Quart, *args: Any, **kwargs: Any) -> Any:
        from quart import request

        dispatched.append(request.path)
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Quart, "full_dispatch_request", counting)
    reply = await memory_api.post("/api/matches/r1/result", {"winner_id": "ann"})
    assert reply.status == 200, reply
    assert reply.content_type == "application/json"
    assert reply.body["status"] == "completed" and reply.body["winner_id"] == "ann"
    again = await memory_api.post("/api/matches/r1/result", {"winner_id": "ann"})
    assert again.status == 200 and again.body == reply.body
    assert dispatched == []
    # the route's own metrics series, as Quart's hook labels it
    metrics = await memory_api.get("/metrics", token=None)
    text = metrics.body.decode() if isinstance(metrics.body, bytes) else str(metrics.body)
    assert 'route="/api/matches/<match_id>/result"' in text


@pytest.mark.parametrize(
    ("path", "kwargs", "status"),
    [
        ("/api/matches/r2/result", {"body": {"winner_id": "ann"}, "token": None}, 401),
        ("/api/matches/r2/result", {"body": {"winner_id": "ann"}, "token": "nope"}, 401),
        ("/api/matches/r2/result", {"body": {"winner_id": "ann"}, "token": "reader"}, 403),
        ("/api/matches/r%20x/result", {"body": {"winner_id": "ann"}}, 404),
        ("/api/matches/nosuch/result", {"body": {"winner_id": "ann"}}, 404),
        (
            "/api/matches/r2/result",
            {"data": '{"winner_id": "ann"}', "headers": {"Content-Type": "text/plain"}},
            415,
        ),
        (
            "/api/matches/r2/result",
            {"data": "{not json", "headers": {"Content-Type": "application/json"}},
            400,
        ),
        (
            "/api/matches/r2/result",
            {"data": '{"winner_id": NaN}', "headers": {"Content-Type": "application/json"}},
            400,
        ),
        ("/api/matches/r2/result", {"body": {"winner_id": "ann", "draw": True}}, 422),
        ("/api/matches/r2/result", {"body": {"draw": "yes"}}, 422),
        ("/api/matches/r2/result", {"body": {"winner_id": "zed"}}, 422),
        (
            "/api/matches/r2/result",
            {
                "data": json.dumps({"winner_id": "ann", "pad": "x" * (1024 * 1024)}),
                "headers": {"Content-Type": "application/json"},
            },
            413,
        ),
    ],
)
async def test_every_refusal_is_the_problem_quart_writes(
    memory_api: Api, path: str, kwargs: dict[str, Any], status: int
) -> None:
    await _played(memory_api, "r2")
    body = kwargs.pop("body", None)
    reply = await memory_api.post(path, body, **kwargs)
    assert_problem(reply, status)
    if status == 401:
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    if status == 422:
        assert reply.body["errors"]
    # and none of them completed the match
    match = await memory_api.get("/api/matches/r2")
    assert match.body["status"] == "scheduled"


async def test_another_result_of_a_completed_match_is_a_conflict(memory_api: Api) -> None:
    await _played(memory_api, "r3")
    assert (await memory_api.post("/api/matches/r3/result", {"draw": True})).status == 200
    assert_problem(await memory_api.post("/api/matches/r3/result", {"winner_id": "bob"}), 409)


async def test_the_write_rate_limit_counts_a_result_once(
    make_app: Callable[..., Quart],
) -> None:
    """Each taken result counts once (r goes down by one from answer to answer, or starts
    again in a new second), the answers carry the RateLimit fields, and over the limit the
    answer is a 429 with Retry-After."""
    async with serving(make_app(rate_limit_writes=3)) as api:
        await _played(api, "r4")
        replies = [await api.post("/api/matches/r4/result", {"draw": True}) for _ in range(8)]
        statuses = [reply.status for reply in replies]
        # 8 requests in at most two seconds (generously: three) of 3 writes each
        assert 429 in statuses, statuses
        remaining = []
        for reply in replies:
            assert reply.headers["RateLimit-Policy"] == '"writes";q=3;w=1'
            if reply.status == 429:
                assert_problem(reply, 429)
                assert int(reply.headers["Retry-After"]) >= 1
                continue
            assert reply.status == 200, reply
            remaining.append(int(reply.headers["RateLimit"].split(";")[1].removeprefix("r=")))
        for before, after in zip(remaining, remaining[1:], strict=False):
            assert after == before - 1 or after > before, remaining


def test_results_on_one_keep_alive_connection_of_a_real_server(live_server: LiveServer) -> None:
    writer = live_server.token("game", "matches:write")
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=30) as sock:
        conn = h11.Connection(h11.CLIENT)

        def post(path: str, body: bytes) -> Any:
            headers = [
                (b"host", b"127.0.0.1"),
                (b"authorization", b"Bearer " + writer.encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            # In one write: the request whole or not at all.
            sock.sendall(
                b"".join(
                    conn.send(event) or b""
                    for event in (
                        h11.Request(method="POST", target=path, headers=headers),
                        h11.Data(data=body),
                        h11.EndOfMessage(),
                    )
                )
            )
            head, answer = read_response(sock, conn)
            conn.start_next_cycle()
            return head.status_code, dict(head.headers), json.loads(answer)

        for n in range(3):
            status, _, created = post(
                "/api/matches", json.dumps({"match_id": f"k{n}", "player_ids": ["a", "b"]}).encode()
            )
            assert status == 201, created
        # taken by the route, refused by it, handed to Quart: one connection throughout
        status, headers, done = post("/api/matches/k0/result", b'{"winner_id": "a"}')
        assert (status, done["winner_id"]) == (200, "a"), done
        assert headers[b"content-type"] == b"application/json"
        status, headers, problem = post("/api/matches/k0/result", b'{"winner_id": "b"}')
        assert status == 409 and headers[b"content-type"] == b"application/problem+json"
        # read here, refused by the schema, replayed to Quart: its 422
        status, _, problem = post("/api/matches/k1/result", b'{"winner_id": "a", "draw": true}')
        assert status == 422 and problem["errors"], problem
        status, _, done = post("/api/matches/k1/result", b'{"draw": true}')
        assert (status, done["draw"]) == (200, True), done
        status, _, done = post("/api/matches/k2/result", b'{"winner_id": "b"}')
        assert (status, done["winner_id"]) == (200, "b"), done
        # (not here: a wrong content type, which Quart refuses before reading the body and then
        # closes the connection, as it always did; its 415 is checked on the test client)
