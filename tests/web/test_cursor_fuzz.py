"""Every place a cursor enters, fuzzed through the app (issue 7 item 2): the long-poll `cursor`,
SSE's `Last-Event-ID` header and `last_event_id` query, the WebSocket subscribe frame's
`cursor`. A cursor this service did not issue is never a 5xx: it is a `stream:reset` with
reason "unknown" (or "expired"), or a 400.

`str.isdigit` accepts superscripts and other non-ASCII digits that `int()` refuses: those are
the seeds of the strategy, beside arbitrary text.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from quart_app.engine.cursor import BadCursor, decode

from ..helpers import Api

RESETS = {"unknown", "expired"}

odd_digits = st.text(
    st.characters(categories=["Nd", "No"]) | st.sampled_from("²³¹⁰٣५0123456789"),
    min_size=1,
    max_size=20,
)
cursors = (
    st.tuples(st.text(max_size=12), odd_digits).map(lambda parts: f"{parts[0]}.{parts[1]}")
    | st.text(max_size=80)
    | st.from_regex(r"\A[0-9a-f]{1,12}\.[0-9]{0,25}\Z")
)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("raw", ["abc.²", "abc.٣", "abc.1²", "e.１２", "abc.", ".5", "5"])
def test_decode_takes_ascii_digits_only(raw: str) -> None:
    with pytest.raises(BadCursor):
        decode(raw)


def _envelopes(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]


def _assert_reset(events: list[dict[str, Any]]) -> None:
    resets = [e for e in events if e.get("event") == "stream:reset"]
    assert resets and resets[0]["data"]["reason"] in RESETS, events


@FUZZ
@example(cursor="abc.²")
@given(cursor=cursors)
async def test_poll_cursor(memory_api: Api, cursor: str) -> None:
    assume(cursor)
    reply = await memory_api.get(f"/api/poll?rooms=matches&timeout=0&cursor={quote(cursor)}")
    assert reply.status in (200, 400), reply
    if reply.status == 200:
        _assert_reset(reply.body["events"])


async def _sse(api: Api, path: str, headers: dict[str, str]) -> tuple[int, list[dict[str, Any]]]:
    async with api.client.request(path, headers=headers) as connection:
        await connection.send_complete()
        body = b""
        try:
            async with asyncio.timeout(5):
                while b"stream:reset" not in body:
                    chunk = await connection.receive()
                    if not chunk:
                        break
                    body += chunk
        finally:
            await connection.disconnect()
        status = connection.status_code
    assert status is not None
    return status, _envelopes(body)


@FUZZ
@example(cursor="abc.²", where="header")
@example(cursor="abc.²", where="query")
@given(cursor=cursors, where=st.sampled_from(["header", "query"]))
async def test_sse_cursor(memory_api: Api, cursor: str, where: str) -> None:
    token = memory_api.token("viewer")
    path = f"/api/events?rooms=matches&access_token={token}"
    headers: dict[str, str] = {}
    if where == "header":
        # What a client sending UTF-8 puts on the wire, read back as the server reads headers.
        value = cursor.encode().decode("latin-1")
        assume(value.strip() and not set(value) & set("\r\n\x00") and value == value.strip())
        headers["Last-Event-ID"] = value
    else:
        assume(cursor)
        path += f"&last_event_id={quote(cursor)}"
    status, events = await _sse(memory_api, path, headers)
    assert status in (200, 400), (status, events)
    if status == 200:
        _assert_reset(events)


@FUZZ
@example(cursor="abc.²")
@given(cursor=cursors)
async def test_websocket_cursor(memory_api: Api, cursor: str) -> None:
    assume(cursor)
    token = memory_api.token("viewer")
    async with memory_api.client.websocket(f"/api/ws?access_token={token}") as ws:
        await ws.send(json.dumps({"type": "subscribe", "rooms": ["matches"], "cursor": cursor}))
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(5):
            while not any(
                f.get("event") == "stream:reset" or f.get("type") == "error" for f in frames
            ):
                frames.append(json.loads(await ws.receive()))
    errors = [f for f in frames if f.get("type") == "error"]
    if errors:
        assert errors[0]["status"] in (400, 422), frames
    else:
        _assert_reset(frames)
