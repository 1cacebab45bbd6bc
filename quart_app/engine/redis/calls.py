"""Calls between instances over Redis pub/sub: a subscribe for a stream held elsewhere is
carried to the instance that holds it, and its answer carried back.

Each instance listens on its own channel `<prefix>call:<instance id>` for requests to it and
answers to its own requests. PUBLISH tells how many subscribers got the message: 0 means no
such instance runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from typing import Any

from redis.exceptions import RedisError

from ..base import CallHandler, EngineUnavailable, NoSuchInstance
from .connection import RedisConnection

log = logging.getLogger(__name__)


class InstanceCalls:
    def __init__(self, connection: RedisConnection, prefix: str, instance_id: str) -> None:
        self._connection = connection
        self._prefix = prefix
        self._instance_id = instance_id
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._handler: CallHandler | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._answering: set[asyncio.Task[None]] = set()

    def _channel(self, instance_id: str) -> str:
        return f"{self._prefix}call:{instance_id}"

    async def start(self, handler: CallHandler | None) -> None:
        self._handler = handler
        self._task = asyncio.create_task(self._listen())
        # Not ready until subscribed: a call routed here right after start must not be lost.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._ready.wait()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for future in self._pending.values():
            future.cancel()

    async def call(
        self, instance_id: str, request: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        call_id = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        message = json.dumps({"id": call_id, "from": self._instance_id, "request": request})
        try:
            try:
                receivers = await self._connection.publish(self._channel(instance_id), message)
            except RedisError as exc:
                raise EngineUnavailable(str(exc)) from exc
            if receivers == 0:
                raise NoSuchInstance(instance_id)
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(call_id, None)

    async def _listen(self) -> None:
        backoff = 0.05
        while True:
            subscription = self._connection.subscription(
                self._channel(self._instance_id), from_pool=True
            )
            try:
                await subscription.subscribe()
                self._ready.set()
                backoff = 0.05
                while True:
                    message = await subscription.next_message(timeout=None)
                    if message is not None and message[0] == "message":
                        self._on_message(message[1])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("instance call channel lost (%s); reconnecting", exc)
            finally:
                with contextlib.suppress(Exception):
                    await subscription.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def _on_message(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if "answer" in message:
            future = self._pending.get(message.get("id"))
            if future is not None and not future.done():
                future.set_result(message["answer"])
        elif "request" in message and self._handler is not None:
            task = asyncio.create_task(self._answer(message))
            self._answering.add(task)  # held, or the loop may drop a running task
            task.add_done_callback(self._answering.discard)

    async def _answer(self, message: dict[str, Any]) -> None:
        assert self._handler is not None
        try:
            answer = await self._handler(message["request"])
        except Exception:  # noqa: BLE001 - the caller must get an answer, not a timeout
            log.exception("instance call failed")
            answer = {"status": 500, "detail": "the holding instance failed"}
        with contextlib.suppress(RedisError):
            await self._connection.publish(
                self._channel(message["from"]), json.dumps({"id": message["id"], "answer": answer})
            )
