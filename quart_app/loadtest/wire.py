"""Pure wire helpers of the load generator: URLs, HTTP/1.1 heads, chunked framing, SSE
scanning, WebSocket frames, the marker the publisher puts in each event. No I/O here.

Everything on the hot path works on whole buffers with C-level bytes methods and one
compiled regex, so the per-delivery cost stays far below the server's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Chunked transfer framing between chunks: the CRLF that ends a chunk's data, then the next
# chunk's size line. The SSE payload of this service never holds a raw CR (frames end lines
# with LF and the JSON escapes control characters), so this can only match framing; a CR
# left over after stripping means a line-ending we did not expect and is reported.
_CHUNK_FRAMING = re.compile(rb"\r\n[0-9A-Fa-f]+(?:;[^\r\n]*)?\r\n")


class WireError(Exception):
    """The server said something this client cannot read."""


@dataclass(frozen=True, slots=True)
class Target:
    """One instance: where to connect and what to send as Host."""

    scheme: str
    host: str
    port: int
    base_path: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.base_path}"

    def resolve(self) -> str:
        """An IP address for the host (resolved once, not per connection)."""
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        for family, _, _, _, address in infos:
            if family == socket.AF_INET:
                return str(address[0])
        return str(infos[0][4][0])


def parse_target(url: str) -> Target:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http",):
        raise ValueError(f"{url!r}: only http:// is supported (put TLS in front of the server)")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    return Target(parts.scheme, parts.hostname, parts.port or 80, parts.path.rstrip("/"))


def request(
    method: str, target: Target, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """An HTTP/1.1 request, keep-alive, as bytes."""
    lines = [f"{method} {target.base_path}{path} HTTP/1.1", f"Host: {target.host_header}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def rooms_query(rooms: list[str]) -> str:
    return quote(",".join(rooms), safe=":,")


@dataclass(slots=True)
class Head:
    status: int
    reason: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None and value.strip().isdigit() else None


def parse_head(raw: bytes) -> Head:
    """Parse a response head (status line and headers, without the blank line)."""
    text = raw.decode("latin-1")
    status_line, _, rest = text.partition("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise WireError(f"not an HTTP response: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in rest.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise WireError(f"bad header line {line[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Head(int(parts[1]), parts[2] if len(parts) > 2 else "", headers)


def split_head(buffer: bytes) -> tuple[Head, bytes] | None:
    """(head, the bytes after it) once the whole head is in `buffer`, else None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > 64 * 1024:
            raise WireError("response head larger than 64 KiB")
        return None
    return parse_head(buffer[:end]), buffer[end + 4 :]


class ResponseReader:
    """Consecutive HTTP/1.1 responses on one keep-alive connection (Content-Length or
    chunked bodies). Not for streams: `feed` returns each complete (head, body)."""

    __slots__ = ("_buffer", "_head", "_chunks", "_chunk_left")

    def __init__(self) -> None:
        self._buffer = b""
        self._head: Head | None = None
        self._chunks: list[bytes] = []
        self._chunk_left = -1

    def feed(self, data: bytes) -> list[tuple[Head, bytes]]:
        self._buffer += data
        out: list[tuple[Head, bytes]] = []
        while True:
            if self._head is None:
                split = split_head(self._buffer)
                if split is None:
                    return out
                self._head, self._buffer = split
                self._chunks, self._chunk_left = [], -1
            head = self._head
            if head.chunked:
                body = self._feed_chunked()
                if body is None:
                    return out
            else:
                length = head.content_length
                if length is None:
                    length = 0 if head.status in (204, 304) or head.status < 200 else -1
                if length < 0:
                    raise WireError("a response without Content-Length on a keep-alive stream")
                if len(self._buffer) < length:
                    return out
                body, self._buffer = self._buffer[:length], self._buffer[length:]
            out.append((head, body))
            self._head = None

    def _feed_chunked(self) -> bytes | None:
        while True:
            if self._chunk_left < 0:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    return None
                size = int(self._buffer[:end].split(b";", 1)[0], 16)
                self._buffer = self._buffer[end + 2 :]
                if size == 0:
                    # No trailers from this service: the last chunk is followed by CRLF.
                    if len(self._buffer) < 2:
                        self._buffer = b"0\r\n" + self._buffer
                        return None
                    self._buffer = self._buffer[2:]
                    body = b"".join(self._chunks)
                    self._chunks = []
                    return body
                self._chunk_left = size
            if len(self._buffer) < self._chunk_left + 2:
                return None
            self._chunks.append(self._buffer[: self._chunk_left])
            self._buffer = self._buffer[self._chunk_left + 2 :]
            self._chunk_left = -1


# --- the marker the publisher puts in each event ------------------------------------------
def marker_data(t_ns: int, n: int, run: str) -> dict[str, object]:
    """The `data` of a load-test announcement: publish time (ns, time.time_ns()), sequence
    number, run id. Key order is part of the contract with `marker_pattern`."""
    return {"t": t_ns, "n": n, "r": run}


def marker_pattern(run: str) -> re.Pattern[bytes]:
    """Finds (t, n) of this run's announcements in any run of bytes: SSE frames, WebSocket
    messages or a poll answer. Tolerates the whitespace of a non-compact json.dumps; only
    this run's events match, so other traffic in the room is ignored."""
    run_bytes = re.escape(json.dumps(run).encode())
    return re.compile(
        rb'"data":\s*\{\s*"t":\s*(\d+),\s*"n":\s*(\d+),\s*"r":\s*' + run_bytes + rb"\s*\}"
    )


# --- SSE ---------------------------------------------------------------------------------
class SseScanner:
    """Cuts a Server-Sent Events body into runs of whole frames.

    `feed(data)` returns the bytes of every frame completed so far (possibly b""), with the
    chunked transfer framing removed. A frame ends with a blank line (b"\\n\\n"); chunk
    framing can never form b"\\n\\n", so a cut after the last b"\\n\\n" of the raw bytes is
    always a frame boundary, and the framing left inside is whole and removed by one regex.
    """

    __slots__ = ("chunked", "pending", "stray_cr")

    def __init__(self, chunked: bool) -> None:
        self.chunked = chunked
        # The body of a chunked response starts with a size line; a CRLF in front makes it
        # look like every later one.
        self.pending = b"\r\n" if chunked else b""
        self.stray_cr = 0

    def feed(self, data: bytes) -> bytes:
        buffer = self.pending + data if self.pending else data
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self.pending = buffer
            return b""
        cut += 2
        frames, self.pending = buffer[:cut], buffer[cut:]
        if self.chunked:
            frames = _CHUNK_FRAMING.sub(b"", frames)
        if b"\r" in frames:
            self.stray_cr += frames.count(b"\r")
        return frames


def count_events(frames: bytes, name: bytes = b"announcement") -> int:
    """How many frames of event `name` a run of whole frames holds (comments such as
    `: ping` and the `retry:` line are not events)."""
    return frames.count(b"\nevent: " + name + b"\n")


# --- WebSocket (RFC 6455, client side) -------------------------------------------------------
def ws_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final client frame, masked (clients must mask)."""
    mask = mask if mask is not None else os.urandom(4)
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    if payload:
        repeated = (mask * (length // 4 + 1))[:length]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
            length, "big"
        )
    else:
        masked = b""
    return head + mask + masked


@dataclass(slots=True)
class WsFrames:
    """What one `WsParser.feed` found."""

    text: bytes  # the complete data frames, headers included: scan it with marker_pattern
    messages: int  # complete data messages
    control: list[tuple[int, bytes]]  # (opcode, payload) of ping/pong/close frames


class WsParser:
    """Server frames (unmasked). The data frames are not copied out one by one: the run of
    complete frames is returned whole, since a 2..10-byte frame header cannot form or break
    a marker match (a match lies inside one JSON message). Fragmented messages (this
    server does not send them) are reassembled on a slow path."""

    __slots__ = ("pending", "_fragments")

    def __init__(self) -> None:
        self.pending = b""
        self._fragments: list[bytes] | None = None

    def feed(self, data: bytes) -> WsFrames:
        buffer = self.pending + data if self.pending else data
        size = len(buffer)
        pos = 0
        messages = 0
        control: list[tuple[int, bytes]] = []
        pieces: list[bytes] = []
        start = 0
        while size - pos >= 2:
            b0 = buffer[pos]
            length = buffer[pos + 1] & 0x7F
            header = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                header = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                header = 10
            if buffer[pos + 1] & 0x80:
                raise WireError("the server sent a masked frame")
            end = pos + header + length
            if end > size:
                break
            opcode = b0 & 0x0F
            if opcode >= 8 or not b0 & 0x80 or opcode == 0 or self._fragments is not None:
                # Off the fast path: flush the run of plain frames so far.
                pieces.append(buffer[start:pos])
                payload = buffer[pos + header : end]
                if opcode >= 8:
                    control.append((opcode, payload))
                elif opcode == 0 and self._fragments is not None:
                    self._fragments.append(payload)
                    if b0 & 0x80:
                        pieces.append(b"\x00" + b"".join(self._fragments) + b"\x00")
                        self._fragments = None
                        messages += 1
                elif opcode in (1, 2) and not b0 & 0x80:
                    self._fragments = [payload]
                else:
                    raise WireError(f"unexpected WebSocket frame opcode {opcode}")
                start = end
            else:
                messages += 1
            pos = end
        pieces.append(buffer[start:pos])
        self.pending = buffer[pos:]
        return WsFrames(b"".join(pieces) if len(pieces) > 1 else pieces[0], messages, control)


def ws_close_code(payload: bytes) -> int:
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
