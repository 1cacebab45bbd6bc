"""The fault suite's exact checks against the truth: SQL read directly (SQLite file or
PostgreSQL), and the boards the instances serve."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import httpx

from quart_app.domain.elo import rating_delta

from .fault_traffic import Traffic
from .helpers import eventually
from .services import LiveServer

INITIAL_RATING = 1200.0
ELO_K = 32.0
HEAL_SECONDS = 10.0  # boards equal to SQL after a fault ends (issue 11)
# Then every client has what the reference has: a client backing off after 503s (up to a few
# seconds between two attempts) reconnects and resumes; generous for a loaded machine.
CATCH_UP_SECONDS = 30.0
# The resets that tell a client to drop its state and start from the head (PROTOCOL 2).
STARTED_OVER = frozenset({"unknown", "expired"})

Rows = list[dict[str, Any]]


async def read_sql(database_url: str) -> tuple[Rows, Rows]:
    """(players, matches) as stored."""
    if database_url.startswith("sqlite"):
        path = database_url.split("sqlite:///", 1)[1]

        def read() -> tuple[Rows, Rows]:
            with sqlite3.connect(path, timeout=30) as db:
                db.row_factory = sqlite3.Row
                players = [dict(r) for r in db.execute("SELECT * FROM players")]
                matches = [dict(r) for r in db.execute("SELECT * FROM matches")]
            return players, matches

        return await asyncio.to_thread(read)
    import asyncpg

    db = await asyncpg.connect(database_url, timeout=10)
    try:
        players = [dict(r) for r in await db.fetch("SELECT * FROM players")]
        matches = [dict(r) for r in await db.fetch("SELECT * FROM matches")]
    finally:
        await db.close()
    return players, matches


def sql_problems(
    players: Rows, matches: Rows, results_ok: list[tuple[str, str | None]]
) -> list[str]:
    """Everything wrong with SQL given what the writer was told: every 2xx result stored
    once with its outcome, and every completed match applied to both players exactly once
    (records, and ratings by an ELO replay in completion order)."""
    problems: list[str] = []
    by_id = {m["match_id"]: m for m in matches}
    for match_id, winner in results_ok:
        row = by_id.get(match_id)
        if row is None or row["status"] != "completed":
            problems.append(f"2xx result {match_id} is not completed in SQL: {row}")
        elif (row["winner_id"], bool(row["draw"])) != (winner, winner is None):
            problems.append(f"{match_id}: SQL has {row['winner_id']}/{row['draw']}, told {winner}")
    completed = sorted(
        (m for m in matches if m["status"] == "completed"),
        key=lambda m: (m["completed_at"], m["match_id"]),
    )
    rating = {p["player_id"]: INITIAL_RATING for p in players}
    record = {p["player_id"]: [0, 0, 0] for p in players}  # wins, losses, draws
    for m in completed:
        a, b = m["player_a"], m["player_b"]
        score = 0.5 if m["draw"] else (1.0 if m["winner_id"] == a else 0.0)
        delta = rating_delta(rating[a], rating[b], score, ELO_K)
        if abs(delta - m["rating_change_a"]) > 1e-6 or abs(delta + m["rating_change_b"]) > 1e-6:
            problems.append(
                f"{m['match_id']}: replayed delta {delta}, stored "
                f"{m['rating_change_a']}/{m['rating_change_b']}"
            )
        rating[a], rating[b] = round(rating[a] + delta, 2), round(rating[b] - delta, 2)
        for player, s in ((a, score), (b, 1.0 - score)):
            record[player][0 if s == 1.0 else 1 if s == 0.0 else 2] += 1
    for p in players:
        pid = p["player_id"]
        if abs(p["rating"] - rating[pid]) > 0.011:
            problems.append(f"{pid}: rating {p['rating']}, replay gives {rating[pid]}")
        if [p["wins"], p["losses"], p["draws"]] != record[pid] or p["games"] != sum(record[pid]):
            problems.append(
                f"{pid}: record {p['wins']}/{p['losses']}/{p['draws']}/{p['games']}, "
                f"completed matches give {record[pid]}"
            )
    return problems


def expected_board(players: Rows) -> list[tuple[str, float, int, int, int]]:
    """The documented order: rating descending, ties by player id."""
    ordered = sorted(players, key=lambda p: (-p["rating"], p["player_id"]))
    return [(p["player_id"], p["rating"], p["wins"], p["losses"], p["draws"]) for p in ordered]


async def served_board(url: str, token: str) -> list[tuple[str, float, int, int, int]] | str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            url + "/api/leaderboard",
            params={"limit": "1000"},
            headers={"Authorization": f"Bearer {token}"},
        )
    if response.status_code != 200:
        return f"{response.status_code}: {response.text[:200]}"
    return [
        (e["player_id"], e["rating"], e["wins"], e["losses"], e["draws"])
        for e in response.json()["entries"]
    ]


class Differs:
    """A falsy answer that says what differs (`eventually` names its last value)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return self.text


async def boards_equal_sql(urls: list[str], token: str, database_url: str) -> bool | Differs:
    """True when every instance serves SQL's board."""
    players, _ = await read_sql(database_url)
    want = expected_board(players)
    for url in urls:
        got = await served_board(url, token)
        if got != want:
            shown = got if isinstance(got, str) else got[:4]
            return Differs(f"{url}: {shown} != SQL {want[:4]} ({len(want)} players)")
    return True


async def status_of(url: str, path: str = "/readyz") -> int:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(url + path)).status_code
    except httpx.HTTPError:
        return 0


async def results_grow(traffic: Traffic, more: int, timeout: float, what: str) -> None:
    target = len(traffic.written.results_ok) + more

    async def grown() -> bool:
        return len(traffic.written.results_ok) >= target

    await eventually(grown, timeout, what, interval=0.1)


async def caught_up_to_reference(traffic: Traffic) -> bool | Differs:
    """`Traffic.caught_up` for a fault after which clients may be told to start over: every
    client has checked up to the reference's end, except one told `stream:reset`
    expired/unknown (the verdict leaves it out). Every 2xx result must be in the reference
    unless the reference reader itself was told to start over: then it skipped what the log
    held before its restart, and "every result in the reference" can never hold."""
    reference = traffic.reference
    if not set(reference.resets) & STARTED_OVER:
        logged = {m for e, m in reference.events if e == "match:result"}
        absent = [m for m, _ in traffic.written.results_ok if m not in logged]
        if absent:
            return Differs(f"2xx results not in the reference yet: {absent[:5]}")
    traffic.settle_checks()
    behind = [
        (w.check.name, w.check.expected, len(w.check.pending))
        for w in traffic.watchers
        if not set(w.check.resets) & STARTED_OVER
        and (w.check.expected < len(reference) or w.check.pending)
    ]
    if behind:
        return Differs(f"reference: {len(reference)} events; clients behind: {behind}")
    return True


async def assert_nothing_lost(
    traffic: Traffic, servers: list[LiveServer], database_url: str, resets_allowed: bool = False
) -> dict[str, object]:
    """After the writes stopped: SQL, the boards and every client, exactly."""
    token = servers[0].token("checker")
    urls = [s.url for s in servers]
    board_wait = await eventually(
        lambda: boards_equal_sql(urls, token, database_url),
        HEAL_SECONDS,
        "both boards equal to SQL",
        interval=0.2,
    )
    players, matches = await read_sql(database_url)
    assert sql_problems(players, matches, traffic.written.results_ok) == []
    assert traffic.written.forbidden == [], traffic.written.forbidden
    # After the boards healed: events logged meanwhile (the relay publishing rows left to it,
    # a write in flight) are owed to every client too, and a client backing off after a 503
    # may not have read them yet. The verdict is taken right after this wait, with no await
    # in between, against the same reference.
    await eventually(
        lambda: caught_up_to_reference(traffic) if resets_allowed else traffic.caught_up(),
        CATCH_UP_SECONDS,
        "every client caught up",
        interval=0.2,
    )
    verdicts = traffic.verdicts()
    for name, verdict in verdicts.items():
        if resets_allowed and set(verdict["resets"]) & STARTED_OVER:
            continue  # told to drop its state: a jump is what the contract allows
        assert verdict["ok"], (name, verdict)
    return {
        "board_wait": round(board_wait, 2),
        "statuses": dict(traffic.written.statuses),
        "clients": {
            name: (v["checked"], v["resets"], v["sessions"], v["failures"])
            for name, v in verdicts.items()
        },
    }
