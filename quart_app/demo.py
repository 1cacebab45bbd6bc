"""Demo traffic: realistic matches among a few hundred players, through the public HTTP API,
so a board page comes alive. `rankpulse demo --url ...` or `rankpulse serve --demo`."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import urllib.error
import urllib.request
from typing import Any

log = logging.getLogger(__name__)

_NAMES = (
    "ace",
    "blaze",
    "comet",
    "dash",
    "echo",
    "fury",
    "ghost",
    "hawk",
    "iris",
    "jinx",
    "kite",
    "lynx",
    "moss",
    "nova",
    "onyx",
    "pike",
    "quill",
    "rune",
    "sage",
    "tide",
    "vex",
    "wren",
    "yeti",
    "zest",
)


def player_ids(count: int) -> list[str]:
    return [f"{_NAMES[i % len(_NAMES)]}-{i // len(_NAMES) + 1}" for i in range(count)]


class DemoClient:
    """Blocking HTTP calls, run in a thread: the demo must work against any deployment and
    needs no client library beyond the standard one."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def dev_token(self) -> str:
        answer = self.call(
            "POST",
            "/api/dev/token",
            {"sub": "demo-bot", "scope": "matches:write", "ttl_seconds": 7 * 86400},
        )
        return str(answer["access_token"])


async def run_demo(
    base_url: str,
    token: str | None = None,
    players: int = 200,
    matches_per_second: float = 2.0,
    stop_after: int | None = None,
) -> int:
    """Play matches until cancelled (or `stop_after` of them); returns how many were played.

    Skill is hidden per player, so the board converges toward a real order; some matches get
    live progress, a few are cancelled, a few end in a draw.
    """
    client = DemoClient(base_url, token)
    if client.token is None:
        client.token = await asyncio.to_thread(client.dev_token)
    rng = random.Random()
    ids = player_ids(players)
    skill = {pid: rng.gauss(0, 1) for pid in ids}
    played = 0
    while stop_after is None or played < stop_after:
        a, b = rng.sample(ids, 2)
        try:
            await asyncio.to_thread(_play, client, rng, a, b, skill)
            played += 1
        except (urllib.error.URLError, OSError) as exc:
            log.warning("demo: %s; retrying", exc)
            await asyncio.sleep(1.0)
        await asyncio.sleep(rng.expovariate(matches_per_second))
    return played


def _play(client: DemoClient, rng: random.Random, a: str, b: str, skill: dict[str, float]) -> None:
    match = client.call("POST", "/api/matches", {"player_ids": [a, b]})
    path = f"/api/matches/{match['match_id']}"
    if rng.random() < 0.05:
        client.call("POST", path + "/cancel")
        return
    client.call("POST", path + "/start")
    if rng.random() < 0.5:
        score = {a: rng.randint(0, 10), b: rng.randint(0, 10)}
        client.call("POST", path + "/progress", {"score": score, "detail": {"round": 1}})
    edge = skill[a] - skill[b] + rng.gauss(0, 1)
    if abs(edge) < 0.1:
        client.call("POST", path + "/result", {"draw": True})
    else:
        client.call("POST", path + "/result", {"winner_id": a if edge > 0 else b})
