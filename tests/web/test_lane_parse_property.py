"""The fast lane's head parser (web/fast_lane.py `parse_head`) never disagrees with h11, the
parser Hypercorn would have used: whatever head it takes, h11 takes too, with the same headers
and the same keep-alive verdict; a head h11 refuses, the lane leaves to Hypercorn. Parsing the
same head again on the same connection (its header block then remembered in the connection's
HeaderMemo) gives the same request."""

from __future__ import annotations

import h11
from hypothesis import given, settings
from hypothesis import strategies as st

from quart_app.web.fast_lane import HeaderMemo, LaneRequest, may_be_lane, parse_head

MAX_HEAD = 16 * 1024
TOKEN = "!#$%&'*+.^_`|~0123456789abcXYZ-"
# Mostly what clients send, with what h11 refuses mixed in (control bytes, a colon or a
# space in a name, bare CR or LF, DEL), and obs-text, which both accept in values.
NAME_CHARS = st.sampled_from(list(TOKEN) + [" ", ":", "\x00", "\x7f", "(", "@"])
VALUE_CHARS = st.sampled_from(
    list("abc XYZ09,;=/\t\"'") + ["\x80", "\xe9", "\xff", "\x00", "\r", "\n", "\x7f"]
)
KNOWN_NAMES = st.sampled_from(
    [
        "Host",
        "host",
        "Connection",
        "Content-Length",
        "Authorization",
        "Cookie",
        "Accept",
        "Last-Event-ID",
        "Upgrade",
        "Expect",
        "Transfer-Encoding",
        "X-Custom",
    ]
)
KNOWN_VALUES = st.sampled_from(
    [
        "close",
        "keep-alive",
        "Keep-Alive, Close",
        "upgrade",
        "0",
        "12",
        "example.org",
        "",
        " padded ",
        "Bearer abc.def.ghi",
        "chunked",
        "100-continue",
        "a\tb",
    ]
)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    target = draw(st.sampled_from(["/api/poll", "/api/events"]))
    query = draw(st.sampled_from(["", "?rooms=matches", "?rooms=a,b&cursor=x.1&top=5"]))
    lines = [f"GET {target}{query} HTTP/1.1"]
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.one_of(KNOWN_NAMES, st.text(NAME_CHARS, min_size=0, max_size=8)))
        value = draw(st.one_of(KNOWN_VALUES, st.text(VALUE_CHARS, max_size=12)))
        separator = draw(st.sampled_from([": ", ":", ":\t", " : "]))
        lines.append(f"{name}{separator}{value}")
    if draw(st.booleans()):
        lines.insert(draw(st.integers(1, len(lines))), "Host: x")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _h11_parse(head: bytes) -> tuple[list[tuple[bytes, bytes]], bool] | None:
    """h11's headers and whether it keeps the connection alive, or None if it refuses."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(head)
    try:
        request = connection.next_event()
        end = connection.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(request, h11.Request) or not isinstance(end, h11.EndOfMessage):
        return None  # (a body, or a head h11 reads differently: not a plain GET)
    return list(request.headers), not connection._cstate.keep_alive


@settings(max_examples=600, deadline=None)
@given(st.lists(heads(), min_size=1, max_size=3))
def test_the_lane_takes_a_head_only_as_h11_reads_it(connection_heads: list[bytes]) -> None:
    memo = HeaderMemo()  # one connection's heads, one after the other, each sent twice
    for head in connection_heads:
        for _ in range(2):
            lane = parse_head(head, MAX_HEAD, memo)
            assert lane == parse_head(head, MAX_HEAD)  # the same with or without the memo
            if not isinstance(lane, LaneRequest):
                continue  # left to Hypercorn: always safe
            assert lane.length == len(head)
            h11_reading = _h11_parse(head)
            assert h11_reading is not None, "the lane took a head h11 refuses"
            headers, close = h11_reading
            assert lane.headers == headers
            assert lane.close == close


@settings(max_examples=400, deadline=None)
@given(before=st.binary(max_size=40), head=heads(), after=st.binary(max_size=40))
def test_a_head_read_in_place_is_read_as_on_its_own(
    before: bytes, head: bytes, after: bytes
) -> None:
    # Pipelined requests are parsed where they lie in the read (a start offset): whatever
    # precedes a head, and whatever follows it, its reading is the head's alone.
    alone = parse_head(head + after, MAX_HEAD)
    assert parse_head(before + head + after, MAX_HEAD, None, len(before)) == alone
    assert may_be_lane(before + head, len(before)) == may_be_lane(head)


def test_a_remembered_block_serves_another_request_line_and_a_new_block_replaces_it() -> None:
    memo = HeaderMemo()
    block = b"Host: x\r\nAuthorization: Bearer t\r\n\r\n"
    first = parse_head(b"GET /api/poll?cursor=a HTTP/1.1\r\n" + block, MAX_HEAD, memo)
    second = parse_head(b"GET /api/events?cursor=b HTTP/1.1\r\n" + block, MAX_HEAD, memo)
    assert isinstance(first, LaneRequest) and isinstance(second, LaneRequest)
    assert (first.path, first.query_string) == ("/api/poll", b"cursor=a")
    assert (second.path, second.query_string) == ("/api/events", b"cursor=b")
    assert first.headers == second.headers == [(b"host", b"x"), (b"authorization", b"Bearer t")]
    assert second.headers is first.headers  # not parsed again
    closing = parse_head(
        b"GET /api/poll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", MAX_HEAD, memo
    )
    assert isinstance(closing, LaneRequest)
    assert closing.close and closing.headers == [(b"host", b"x"), (b"connection", b"close")]
