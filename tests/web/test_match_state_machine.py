"""The match API against a reference model (PROTOCOL section 4), step by step.

Hypothesis drives random sequences of creates, starts, progress reports, results and cancels,
repeats of each, and concurrent duplicates (the same request twice at once). The model says
what each call must answer (200/201/202/404/409/422) and which events it must emit; after every
step the SQL tables (matches, players), the engine's board and the event log must agree with it.
Ratings are computed by the model with quart_app.domain.elo, independently of the service.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from quart import Quart

from quart_app.domain import elo

from ..helpers import Api, Reply, board, board_view, sql_matches, sql_players

T = TypeVar("T")

PLAYERS = ["ann", "bob", "cy", "dee"]
MATCH_IDS = ["m1", "m2", "m3", "m4", "m5"]
INITIAL = 1200.0
K = 32.0
REPEATABLE = {"start": "live", "cancel": "cancelled"}

player_ids = st.sampled_from(PLAYERS)
match_ids = st.sampled_from(MATCH_IDS)
pairs = st.lists(player_ids, min_size=2, max_size=2, unique=True)
# a winner may be someone who does not play in the match: that is a 422
outcomes = st.one_of(st.none(), player_ids)


@dataclass
class PlayerModel:
    rating: float = INITIAL
    wins: int = 0
    losses: int = 0
    draws: int = 0

    @property
    def games(self) -> int:
        return self.wins + self.losses + self.draws


@dataclass
class MatchModel:
    players: list[str]
    status: str = "scheduled"
    winner_id: str | None = None
    draw: bool = False
    rating_changes: dict[str, float] = field(default_factory=dict)


@dataclass
class Expected:
    """What one call must answer and emit (event names in log order)."""

    status: int
    events: list[str] = field(default_factory=list)


class MatchApiMachine(RuleBasedStateMachine):
    """One fresh app per example, started on its own event loop (hypothesis' stateful runner
    is synchronous)."""

    make_app: Callable[..., Quart]
    tmp: Path
    engine_url: str | None

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.players: dict[str, PlayerModel] = {}
        self.matches: dict[str, MatchModel] = {}
        self.api: Api | None = None
        self._context: Any = None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, 30))

    @initialize()
    def start_app(self) -> None:
        app = self.make_app(
            database_url=f"sqlite:///{self.tmp}/{uuid.uuid4().hex}.db",
            redis_url=self.engine_url,
            elo_k=K,
            initial_rating=INITIAL,
        )
        self._context = app.test_app()
        test_app = self.run(self._context.__aenter__())
        self.api = Api(app, test_app.test_client())
        self.run(asyncio.wait_for(self.api.rt.board_loaded(), 30))  # a settled instance

    def teardown(self) -> None:
        try:
            if self._context is not None:
                self.run(self._context.__aexit__(None, None, None))
        finally:
            # Whatever a failed step left running ends here, on this loop, before it closes
            # (a database worker thread would otherwise answer into a closed loop).
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(
                    asyncio.wait(pending, timeout=10)  # cancelled tasks end promptly
                )
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    # the model ---------------------------------------------------------------------------
    def expect_create(self, match_id: str, pair: list[str]) -> Expected:
        existing = self.matches.get(match_id)
        if existing is not None:
            return Expected(200 if sorted(existing.players) == sorted(pair) else 409)
        self.matches[match_id] = MatchModel(list(pair))
        newcomers = [pid for pid in pair if pid not in self.players]
        for pid in newcomers:
            self.players[pid] = PlayerModel()
        return Expected(201, ["match:created"] + (["leaderboard:update"] if newcomers else []))

    def expect_transition(self, match_id: str, action: str) -> Expected:
        match = self.matches.get(match_id)
        if match is None:
            return Expected(404)
        target = REPEATABLE[action]
        allowed = {"start": {"scheduled"}, "cancel": {"scheduled", "live"}}[action]
        if match.status == target:
            return Expected(200)
        if match.status not in allowed:
            return Expected(409)
        match.status = target
        return Expected(200, [f"match:{'started' if action == 'start' else 'cancelled'}"])

    def expect_progress(self, match_id: str) -> Expected:
        match = self.matches.get(match_id)
        if match is None:
            return Expected(404)
        return Expected(202, ["match:progress"]) if match.status == "live" else Expected(409)

    def expect_result(self, match_id: str, winner: str | None) -> Expected:
        match = self.matches.get(match_id)
        if match is None:
            return Expected(404)
        if winner is not None and winner not in match.players:
            return Expected(422)
        if match.status == "completed":
            same = match.winner_id == winner and match.draw == (winner is None)
            return Expected(200 if same else 409)
        if match.status == "cancelled":
            return Expected(409)
        a, b = (self.players[pid] for pid in match.players)
        score_a = 0.5 if winner is None else (1.0 if winner == match.players[0] else 0.0)
        a.rating, b.rating, delta = elo.apply_result(a.rating, b.rating, score_a, K)
        for player, score in ((a, score_a), (b, 1.0 - score_a)):
            if score == 1.0:
                player.wins += 1
            elif score == 0.0:
                player.losses += 1
            else:
                player.draws += 1
        match.status, match.winner_id, match.draw = "completed", winner, winner is None
        match.rating_changes = {match.players[0]: delta, match.players[1]: -delta}
        personal = ["leaderboard:player_rank", "player:stats_update"] * 2
        return Expected(200, ["match:result", "leaderboard:update", *personal])

    # calling the service -----------------------------------------------------------------
    def call(self, path: str, body: Any, expected: Expected, copies: int = 1) -> list[Reply]:
        """Send `copies` identical requests at once; exactly one may make the change."""
        api = self.api
        assert api is not None

        async def send() -> tuple[int, list[Reply]]:
            head = await api.rt.engine.head()
            replies = await asyncio.gather(*(api.post(path, body) for _ in range(copies)))
            return head, list(replies)

        head, replies = self.run(send())
        statuses = sorted(reply.status for reply in replies)
        if copies == 1:
            assert statuses == [expected.status], (path, body, replies)
        elif expected.status == 201:  # one creates, the others find the same match
            assert statuses == [200] * (copies - 1) + [201], (path, body, replies)
        else:
            assert statuses == [expected.status] * copies, (path, body, replies)
        for reply in replies:
            if reply.status >= 400:
                assert reply.content_type == "application/problem+json", reply
        self.check_events(head, expected.events)
        return replies

    def check_events(self, head: int, wanted: list[str]) -> None:
        api = self.api
        assert api is not None
        logged = self.run(api.rt.engine.read_after(head, 1000))
        assert [event.name for event in logged] == wanted

    # rules ---------------------------------------------------------------------------------
    @rule(match_id=match_ids, pair=pairs, copies=st.sampled_from([1, 1, 2]))
    def create(self, match_id: str, pair: list[str], copies: int) -> None:
        expected = self.expect_create(match_id, pair)
        replies = self.call(
            "/api/matches", {"match_id": match_id, "player_ids": pair}, expected, copies
        )
        for reply in replies:
            if reply.status in (200, 201):
                self.assert_match_body(match_id, reply.body)

    @rule(match_id=match_ids, player=player_ids)
    def create_against_oneself(self, match_id: str, player: str) -> None:
        self.call("/api/matches", {"match_id": match_id, "player_ids": [player] * 2}, Expected(422))

    @rule(
        match_id=match_ids,
        action=st.sampled_from(sorted(REPEATABLE)),
        copies=st.sampled_from([1, 2]),
    )
    def transition(self, match_id: str, action: str, copies: int) -> None:
        expected = self.expect_transition(match_id, action)
        replies = self.call(f"/api/matches/{match_id}/{action}", None, expected, copies)
        for reply in replies:
            if reply.status == 200:
                self.assert_match_body(match_id, reply.body)

    @rule(match_id=match_ids, points=st.integers(0, 50))
    def progress(self, match_id: str, points: int) -> None:
        match = self.matches.get(match_id)
        score = {match.players[0]: points} if match else {"ann": points}
        expected = self.expect_progress(match_id)
        self.call(f"/api/matches/{match_id}/progress", {"score": score}, expected)

    @rule(match_id=match_ids, winner=outcomes, copies=st.sampled_from([1, 1, 2]))
    def result(self, match_id: str, winner: str | None, copies: int) -> None:
        expected = self.expect_result(match_id, winner)
        outcome = {"draw": True} if winner is None else {"winner_id": winner}
        replies = self.call(f"/api/matches/{match_id}/result", outcome, expected, copies)
        ok = [reply.body for reply in replies if reply.status == 200]
        for body in ok:
            self.assert_match_body(match_id, body)
            assert body["rating_changes"] == self.matches[match_id].rating_changes
        assert all(body == ok[0] for body in ok), "a repeated result answers the same body"

    @rule(match_id=match_ids)
    def get(self, match_id: str) -> None:
        api = self.api
        assert api is not None
        reply = self.run(api.get(f"/api/matches/{match_id}"))
        if match_id not in self.matches:
            assert reply.status == 404, reply
        else:
            assert reply.status == 200, reply
            self.assert_match_body(match_id, reply.body)

    def assert_match_body(self, match_id: str, body: dict[str, Any]) -> None:
        match = self.matches[match_id]
        assert body["match_id"] == match_id
        assert sorted(body["player_ids"]) == sorted(match.players)
        assert (body["status"], body["winner_id"], body["draw"]) == (
            match.status,
            match.winner_id,
            match.draw,
        ), body

    # invariants: SQL, the board and the model agree after every step ------------------------
    @invariant()
    def sql_agrees(self) -> None:
        if self.api is None:
            return
        rows = self.run(sql_matches(self.api.rt.store))
        assert set(rows) == set(self.matches)
        for match_id, match in self.matches.items():
            row = rows[match_id]
            assert sorted([row["player_a"], row["player_b"]]) == sorted(match.players)
            assert (row["status"], row["winner_id"], bool(row["draw"])) == (
                match.status,
                match.winner_id,
                match.draw,
            ), row
        people = self.run(sql_players(self.api.rt.store))
        assert set(people) == set(self.players)
        for pid, player in self.players.items():
            got = people[pid]
            assert (got["rating"], got["wins"], got["losses"], got["draws"], got["games"]) == (
                player.rating,
                player.wins,
                player.losses,
                player.draws,
                player.games,
            ), (pid, got)

    @invariant()
    def board_agrees(self) -> None:
        if self.api is None:
            return
        ordered = sorted(self.players.items(), key=lambda item: (-item[1].rating, item[0]))
        want = [(rank, pid, p.rating) for rank, (pid, p) in enumerate(ordered, 1)]
        ranked = self.run(board(self.api.rt.engine))
        assert board_view(ranked) == want
        for _, entry in ranked:
            player = self.players[entry.player_id]
            assert (entry.wins, entry.losses, entry.draws, entry.games) == (
                player.wins,
                player.losses,
                player.draws,
                player.games,
            ), entry

    @invariant()
    def last_result_event_agrees(self) -> None:
        """Each completed match has exactly one match:result in the log, with the model's
        result and rating changes (repeats and concurrent duplicates emitted nothing)."""
        if self.api is None:
            return
        logged = self.run(self.api.rt.engine.read_after(0, 10_000))
        results: dict[str, list[dict[str, Any]]] = {}
        for event in logged:
            if event.name == "match:result":
                data = json.loads(event.text)["data"]
                results.setdefault(data["match_id"], []).append(data)
        completed = {mid for mid, m in self.matches.items() if m.status == "completed"}
        assert set(results) == completed
        for match_id, datas in results.items():
            match = self.matches[match_id]
            assert len(datas) == 1, datas
            assert (datas[0]["winner_id"], datas[0]["draw"], datas[0]["rating_changes"]) == (
                match.winner_id,
                match.draw,
                match.rating_changes,
            )


@pytest.mark.parametrize("engine_kind", ["memory", "redis"])
def test_match_api_agrees_with_the_model(
    engine_kind: str,
    make_app: Callable[..., Quart],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    engine_url = None if engine_kind == "memory" else request.getfixturevalue("redis_url")
    redis_server = request.getfixturevalue("redis_server") if engine_url else None

    class Machine(MatchApiMachine):
        def __init__(self) -> None:
            if redis_server is not None:
                redis_server.cli("FLUSHALL")  # each example starts from an empty log and board
            super().__init__()

    Machine.make_app = staticmethod(make_app)  # type: ignore[assignment]
    Machine.tmp = tmp_path
    Machine.engine_url = engine_url
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=15 if engine_kind == "memory" else 8,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
