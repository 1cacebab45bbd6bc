"""Test clients for the three transports, speaking the wire protocol as a browser or bot
would. Every wait has a timeout; nothing sleeps for a fixed time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import websockets

Envelope = dict[str, Any]

# httpx makes a TLS context for every client (it loads certifi's CA bundle: 45 ms each, more
# on a loaded machine), even for the plain-HTTP local servers the tests talk to; a client
# per request made that a large part of many tests. All share this one (what httpx makes).
TLS = httpx.create_ssl_context()


class SSEClient:
    """An EventSource: parses frames into envelopes as they arrive."""

    def __init__(
        self,
        base_url: str,
        rooms: str,
        token: str | None = None,
        last_event_id: str | None = None,
        **params: str,
    ) -> None:
        self.params = {"rooms": rooms, **params}
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        if last_event_id:
            self.headers["Last-Event-ID"] = last_event_id
        self.client = httpx.AsyncClient(
            base_url=base_url, timeout=httpx.Timeout(10, read=None), verify=TLS
        )
        self.events: list[Envelope] = []
        self.pings = 0
        self.retry: int | None = None
        self.status: int | None = None
        self.ended = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()

    async def __aenter__(self) -> SSEClient:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._opened.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.aclose()

    async def _read(self) -> None:
        try:
            async with self.client.stream(
                "GET", "/api/events", params=self.params, headers=self.headers
            ) as response:
                self.status = response.status_code
                self.content_type = response.headers.get("content-type", "")
                self.response_headers = response.headers
                self._opened.set()
                if response.status_code != 200:
                    self.body = json.loads(await response.aread())
                    return
                fields: dict[str, str] = {}
                async for line in response.aiter_lines():
                    if line == "":
                        if "data" in fields:
                            await self._add(json.loads(fields["data"]), fields)
                        fields = {}
                    elif line.startswith(":"):
                        self.pings += 1
                        async with self._changed:
                            self._changed.notify_all()
                    else:
                        name, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if name == "retry":
                            self.retry = int(value)
                        else:
                            fields[name] = fields[name] + "\n" + value if name in fields else value
        except (httpx.HTTPError, asyncio.CancelledError):
            pass
        finally:
            self._opened.set()
            self.ended.set()
            async with self._changed:
                self._changed.notify_all()

    async def _add(self, envelope: Envelope, fields: dict[str, str]) -> None:
        assert fields.get("id") == envelope["id"], "SSE id field differs from the envelope id"
        assert fields.get("event") == envelope["event"], "SSE event field differs from envelope"
        self.events.append(envelope)
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[list[Envelope]], bool], timeout: float = 5, what: str = "events"
    ) -> list[Envelope]:
        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.events) or self.ended.is_set())

        try:
            await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; got {names(self.events)[-30:]}"
            ) from None
        if not predicate(self.events):
            raise AssertionError(f"stream ended before {what}: {names(self.events)}")
        return self.events

    async def wait_event(self, name: str, timeout: float = 5) -> Envelope:
        events = await self.wait_for(
            lambda evs: any(e["event"] == name for e in evs), timeout, name
        )
        return next(e for e in events if e["event"] == name)

    def named(self, *event_names: str) -> list[Envelope]:
        return [e for e in self.events if e["event"] in event_names]

    @property
    def cursor(self) -> str:
        return str(self.events[-1]["id"])

    @property
    def connection_id(self) -> str:
        return str(self.named("stream:open")[0]["data"]["connection_id"])


class WSClient:
    def __init__(self, base_url: str, token: str | None = None, origin: str | None = None) -> None:
        self.url = base_url.replace("http://", "ws://") + "/api/ws"
        if token:
            self.url += f"?access_token={token}"
        self.origin = origin
        self.frames: list[dict[str, Any]] = []
        self.socket: Any = None

    async def __aenter__(self) -> WSClient:
        self.socket = await websockets.connect(
            self.url, origin=self.origin, max_size=None, open_timeout=10
        )  # type: ignore[arg-type]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.socket.close()

    async def drop(self) -> None:
        """Go away as a lost network does: no Close handshake. (A graceful close() with
        unread frames queued waits for its timeout: the library stops reading the socket
        while its queue is full, so the server's Close cannot reach it.)"""
        self.socket.transport.abort()
        await self.socket.wait_closed()

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.socket.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.socket.recv(), timeout))
        self.frames.append(frame)
        return frame  # type: ignore[no-any-return]

    async def subscribe(self, rooms: list[str], cursor: str | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "subscribe", "rooms": rooms}
        if cursor:
            frame["cursor"] = cursor
        await self.send(frame)
        while True:
            answer = await self.recv()
            if answer.get("type") in ("subscribed", "error"):
                return answer

    @property
    def events(self) -> list[Envelope]:
        return [f for f in self.frames if "event" in f]

    async def wait_for(
        self, predicate: Callable[[list[Envelope]], bool], timeout: float = 5
    ) -> list[Envelope]:
        async def until() -> None:
            while not predicate(self.events):
                await self.recv(timeout)

        try:
            await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout}s; got frames {self.frames[-30:]}"
            ) from None
        return self.events


async def poll(
    base_url: str,
    rooms: str,
    token: str,
    cursor: str | None = None,
    timeout: float = 5,
    **params: str,
) -> httpx.Response:
    query = {"rooms": rooms, "timeout": str(timeout), **params}
    if cursor:
        query["cursor"] = cursor
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout + 10, verify=TLS) as client:
        return await client.get(
            "/api/poll", params=query, headers={"Authorization": f"Bearer {token}"}
        )


async def poll_until(
    base_url: str,
    rooms: str,
    token: str,
    cursor: str,
    predicate: Callable[[list[Envelope]], bool],
    timeout: float = 10,
) -> tuple[list[Envelope], str]:
    """Long-poll like a client does, gathering events until `predicate` holds."""
    events: list[Envelope] = []

    async def until() -> str:
        position = cursor
        while not predicate(events):
            answer = (await poll(base_url, rooms, token, position, timeout=5)).json()
            events.extend(answer["events"])
            position = answer["cursor"]
        return position

    try:
        return events, await asyncio.wait_for(until(), timeout)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout}s polling; got {names(events)[-30:]}"
        ) from None


def names(events: list[Envelope]) -> list[str]:
    return [e["event"] for e in events]


def log_events(events: list[Envelope]) -> list[Envelope]:
    """The events that come from the log (not stream:open/reset or snapshots)."""
    return [
        e
        for e in events
        if not e["event"].startswith("stream:") and e["event"] != "leaderboard:initial"
    ]


class HttpApi:
    """The POST side of a live instance."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        expect: int | tuple[int, ...] = (200, 201, 202),
    ) -> Any:
        # A client per request: tests run each on its own event loop, and this is no hot path.
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10, verify=TLS) as client:
            response = await client.request(method, path, json=body, headers=self.headers)
        allowed = (expect,) if isinstance(expect, int) else expect
        assert response.status_code in allowed, (response.status_code, response.text)
        return response.json()

    async def play(
        self, a: str, b: str, winner: str | None, match_id: str | None = None
    ) -> dict[str, Any]:
        """Create, start and finish a match; returns the result body."""
        body: dict[str, Any] = {"player_ids": [a, b]}
        if match_id:
            body["match_id"] = match_id
        match = await self.request("POST", "/api/matches", body)
        await self.request("POST", f"/api/matches/{match['match_id']}/start")
        outcome = {"winner_id": winner} if winner else {"draw": True}
        result: dict[str, Any] = await self.request(
            "POST", f"/api/matches/{match['match_id']}/result", outcome
        )
        return result

    async def announce_many(self, room: str, datas: list[dict[str, Any]]) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10, verify=TLS) as client:
            for data in datas:
                response = await client.post(
                    "/api/publish",
                    headers=self.headers,
                    json={"room": room, "event": "announcement", "data": data},
                )
                assert response.status_code == 202, response.text

    async def announce(self, room: str, data: dict[str, Any]) -> str:
        answer = await self.request(
            "POST", "/api/publish", {"room": room, "event": "announcement", "data": data}
        )
        return str(answer["id"])
