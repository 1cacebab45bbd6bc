"""The realtime endpoints' request parsing gives what the general parsers gave (issue 9: the
fast path must not change what a poll or a stream means)."""

from __future__ import annotations

from urllib.parse import parse_qs

from hypothesis import given
from hypothesis import strategies as st

from quart_app.web.request_parts import query_params, stream_headers
from quart_app.web.streams import scope_headers

QUERY_BYTES = st.binary(max_size=80) | st.lists(
    st.sampled_from([b"rooms", b"=", b"&", b"%", b"+", b"2", b"C", b"%2C", b"%zz", b"\xff", b"a"]),
    max_size=25,
).map(b"".join)


@given(QUERY_BYTES)
def test_query_params_are_what_parse_qs_gives(raw: bytes) -> None:
    expected = {k: v[-1] for k, v in parse_qs(raw.decode("latin-1")).items()}
    assert query_params(raw) == expected


def test_a_real_poll_query() -> None:
    raw = b"rooms=leaderboard%3Aglobal,matches&cursor=ab-1&timeout=&top=1&top=2&access_token=t+k"
    assert query_params(raw) == {
        "rooms": "leaderboard:global,matches",
        "cursor": "ab-1",
        "top": "2",
        "access_token": "t k",
    }


@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"authorization", b"cookie", b"last-event-id", b"host"]),
            st.binary(max_size=10),
        ),
        max_size=6,
    )
)
def test_stream_headers_are_what_the_header_dict_gives(headers: list[tuple[bytes, bytes]]) -> None:
    scope = {"headers": headers}
    as_dict = scope_headers(scope)
    assert stream_headers(scope) == (
        as_dict.get("authorization"),
        as_dict.get("cookie"),
        as_dict.get("last-event-id"),
    )
