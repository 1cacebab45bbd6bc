"""The load generator's pure parts: HTTP heads, chunked framing, SSE scanning, WebSocket
frames, the event marker, the per-client completeness check."""

from __future__ import annotations

import json
import random

import pytest

from quart_app.loadtest import _source_ips
from quart_app.loadtest.sysinfo import parse_cpu_list
from quart_app.loadtest.tracker import Tracker, percentile
from quart_app.loadtest.wire import (
    ResponseReader,
    SseScanner,
    WireError,
    WsParser,
    count_events,
    marker_data,
    marker_pattern,
    parse_head,
    parse_target,
    request,
    split_head,
    ws_accept,
    ws_frame,
)

RUN = "r1"


def sse_frame(n: int, run: str = RUN, spaced: bool = False) -> bytes:
    data = marker_data(1_000 + n, n, run)
    text = json.dumps(
        {"id": f"e.{n}", "rooms": ["matches"], "event": "announcement", "data": data, "ts": 1},
        separators=(", ", ": ") if spaced else (",", ":"),
    )
    return f"id: e.{n}\nevent: announcement\ndata: {text}\n\n".encode()


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)


def numbers(frames: bytes) -> list[int]:
    return [int(n) for _, n in marker_pattern(RUN).findall(frames)]


# --- HTTP ------------------------------------------------------------------------------------
def test_parse_head_lowercases_and_joins_headers() -> None:
    head = parse_head(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2"
    )
    assert head.status == 200 and head.chunked
    assert head.headers["content-type"] == "text/event-stream"
    assert head.headers["x-a"] == "1, 2"


def test_parse_head_refuses_garbage() -> None:
    with pytest.raises(WireError):
        parse_head(b"SSH-2.0-OpenSSH")


def test_split_head_waits_for_the_blank_line() -> None:
    assert split_head(b"HTTP/1.1 200 OK\r\nA: b\r\n") is None
    split = split_head(b"HTTP/1.1 204 No Content\r\n\r\nrest")
    assert split is not None and split[0].status == 204 and split[1] == b"rest"


def test_request_bytes() -> None:
    target = parse_target("http://localhost:8000/base/")
    raw = request("POST", target, "/api/publish", {"A": "b"}, b"{}")
    assert raw == (
        b"POST /base/api/publish HTTP/1.1\r\nHost: localhost:8000\r\nA: b\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    assert parse_target("127.0.0.1:80").host_header == "127.0.0.1"
    with pytest.raises(ValueError):
        parse_target("https://example.org")


def test_response_reader_pipelined_content_length_and_chunked() -> None:
    stream = (
        b'HTTP/1.1 202 Accepted\r\nContent-Length: 8\r\n\r\n{"id":1}'
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b"ab", b"cde")
        + b"0\r\n\r\n"
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"
    )
    for size in (1, 3, 7, len(stream)):
        reader = ResponseReader()
        answers = []
        for i in range(0, len(stream), size):
            answers.extend(reader.feed(stream[i : i + size]))
        assert [(h.status, b) for h, b in answers] == [
            (202, b'{"id":1}'),
            (200, b"abcde"),
            (403, b"no"),
        ], size


# --- SSE -------------------------------------------------------------------------------------
def test_sse_scanner_survives_any_split_of_a_chunked_stream() -> None:
    """Frames split across chunks and reads at every possible place come out whole, the
    chunk framing gone, heartbeats and the retry line not counted as events."""
    frames = [b"retry: 2000\n\n", b"id: e.0\nevent: stream:open\ndata: {}\n\n"]
    frames += [sse_frame(n) for n in range(40)]
    frames.insert(10, b": ping\n\n")
    payload = b"".join(frames)
    rng = random.Random(7)
    for _ in range(200):
        # Chunk boundaries anywhere (not only between frames), then reads anywhere.
        cuts = sorted(rng.sample(range(1, len(payload)), rng.randint(0, 30)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        raw = chunked(*pieces)
        reads = sorted(rng.sample(range(1, len(raw)), rng.randint(0, 60)))
        scanner = SseScanner(chunked=True)
        bounds = zip([0, *reads], [*reads, len(raw)], strict=True)
        out = b"".join(scanner.feed(raw[a:b]) for a, b in bounds)
        assert out == payload
        assert scanner.stray_cr == 0
        assert count_events(out) == 40
        assert numbers(out) == list(range(40))


def test_sse_scanner_plain_body_and_stray_cr() -> None:
    scanner = SseScanner(chunked=False)
    assert scanner.feed(b"data: a\r\n\n") == b"data: a\r\n\n"
    assert scanner.stray_cr == 1
    assert scanner.feed(b"data: b\n") == b""
    assert scanner.feed(b"\n") == b"data: b\n\n"


def test_marker_pattern_reads_compact_and_spaced_json_of_this_run_only() -> None:
    blob = sse_frame(1) + sse_frame(2, spaced=True) + sse_frame(3, run="other")
    assert numbers(blob) == [1, 2]
    assert marker_pattern(RUN).findall(blob)[0] == (b"1001", b"1")
    # A player name that spells the marker inside a string is escaped and cannot match.
    forged = json.dumps({"name": '"data":{"t":1,"n":9,"r":"r1"}'}).encode()
    assert numbers(forged) == []


# --- WebSocket -----------------------------------------------------------------------------
def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        head += bytes([len(payload)])
    elif len(payload) < 65536:
        head += bytes([126]) + len(payload).to_bytes(2, "big")
    else:
        head += bytes([127]) + len(payload).to_bytes(8, "big")
    return head + payload


def envelope(n: int) -> bytes:
    return json.dumps(
        {
            "id": f"e.{n}",
            "rooms": ["m"],
            "event": "announcement",
            "data": marker_data(5, n, RUN),
            "ts": 1,
        },
        separators=(",", ":"),
    ).encode() + b" " * (n * 37 % 300)


def test_ws_parser_any_split_with_control_and_fragments() -> None:
    stream = b"".join(server_frame(1, envelope(n)) for n in range(5))
    stream += server_frame(9, b"hi")  # ping
    second = envelope(5)
    stream += server_frame(1, second[:10], fin=False) + server_frame(0, second[10:])
    stream += b"".join(server_frame(1, envelope(n)) for n in range(6, 9))
    stream += server_frame(8, (4008).to_bytes(2, "big") + b"slow")
    rng = random.Random(3)
    for _ in range(200):
        reads = sorted(rng.sample(range(1, len(stream)), rng.randint(0, 40)))
        parser = WsParser()
        text, messages, control = b"", 0, []
        for a, b in zip([0, *reads], [*reads, len(stream)], strict=True):
            found = parser.feed(stream[a:b])
            text += found.text
            messages += found.messages
            control += found.control
        assert messages == 9
        assert numbers(text) == list(range(9))
        assert control == [(9, b"hi"), (8, (4008).to_bytes(2, "big") + b"slow")]


def test_ws_parser_refuses_masked_server_frames() -> None:
    with pytest.raises(WireError):
        WsParser().feed(ws_frame(1, b"x"))


def test_ws_client_frame_is_masked_correctly() -> None:
    mask = b"\x01\x02\x03\x04"
    for payload in (b"", b"hello", b"x" * 200, b"y" * 70_000):
        frame = ws_frame(1, payload, mask)
        assert frame[0] == 0x81 and frame[1] & 0x80
        length = frame[1] & 0x7F
        offset = 2 if length < 126 else (4 if length == 126 else 10)
        assert frame[offset : offset + 4] == mask
        body = frame[offset + 4 :]
        assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == payload


def test_ws_accept_matches_rfc_example() -> None:
    assert ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# --- completeness --------------------------------------------------------------------------
def test_tracker_in_order_is_complete() -> None:
    tracker = Tracker()
    tracker.feed([0, 1, 2])
    tracker.feed([3])
    tracker.feed([4, 5, 6, 7, 8, 9])
    assert tracker.seen is None  # never left the fast path
    verdict = tracker.verdict(10)
    assert (verdict.received, verdict.missing, verdict.duplicated, verdict.out_of_order) == (
        10,
        0,
        0,
        0,
    )
    assert tracker.verdict(12).missing == 2  # the last two never came


def test_tracker_missing_duplicated_out_of_order() -> None:
    tracker = Tracker()
    tracker.feed([0, 1, 2, 4])  # 3 missing so far
    tracker.feed([2])  # duplicate
    tracker.feed([3])  # late: out of order, no longer missing
    tracker.feed([6, 7])  # 5 missing
    verdict = tracker.verdict(9)  # 8 never came
    assert (verdict.missing, verdict.duplicated, verdict.out_of_order, verdict.unexpected) == (
        2,
        1,
        1,
        0,
    )
    assert verdict.received == 8


def test_tracker_failed_publishes_are_not_missing() -> None:
    tracker = Tracker()
    tracker.feed([0, 1, 3])
    verdict = tracker.verdict(4, frozenset({2}))
    assert (verdict.missing, verdict.unexpected) == (0, 0)
    tracker.feed([2])  # delivered although its publish was refused
    assert tracker.verdict(4, frozenset({2})).unexpected == 1


def test_tracker_several_publishers_interleave_freely() -> None:
    tracker = Tracker(publishers=3)
    tracker.feed([0, 2, 1, 5, 3, 4, 6])
    tracker.feed([8, 7])
    assert tracker.seen is None
    verdict = tracker.verdict(9)
    assert (verdict.missing, verdict.duplicated, verdict.out_of_order) == (0, 0, 0)
    tracker.feed([9, 12, 10, 11])  # publisher 0 sent 9 then 12: fine; 10, 11 fine
    assert tracker.verdict(13).missing == 0
    # Publisher 1 out of order (16 before 13), and 15 of publisher 0 missing:
    tracker.feed([14, 16, 13, 16])
    verdict = tracker.verdict(17)
    assert (verdict.missing, verdict.duplicated, verdict.out_of_order) == (1, 1, 1)


def test_tracker_large_random_agrees_with_a_set() -> None:
    rng = random.Random(11)
    for _ in range(50):
        published = rng.randint(1, 300)
        arrivals = [n for n in range(published) if rng.random() > 0.05]
        arrivals += rng.sample(arrivals, min(len(arrivals), rng.randint(0, 3)))
        if rng.random() < 0.5 and len(arrivals) > 3:
            i = rng.randrange(len(arrivals) - 1)
            arrivals[i], arrivals[i + 1] = arrivals[i + 1], arrivals[i]
        tracker = Tracker()
        position = 0
        while position < len(arrivals):
            step = rng.randint(1, 20)
            tracker.feed(arrivals[position : position + step])
            position += step
        verdict = tracker.verdict(published)
        assert verdict.missing == published - len(set(arrivals))
        assert verdict.duplicated == len(arrivals) - len(set(arrivals))


# --- small parsers ---------------------------------------------------------------------------
def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0


def test_cpu_list_and_source_ips() -> None:
    assert parse_cpu_list("0,2-4") == {0, 2, 3, 4}
    with pytest.raises(ValueError):
        parse_cpu_list("3-1")
    assert _source_ips("127.0.0.2-127.0.0.4,127.0.0.9") == [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.9",
    ]
