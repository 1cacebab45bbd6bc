"""Deciding a group of match results from the rows they read: pure, no I/O.

The writer loads every match of a group and both players of each, in one transaction, and
hands them here. Results are decided one after the other, in the group's order, each on the
rows the ones before it left (a player in two results of a group plays the second at the
rating the first gave them), exactly as if each had been its own transaction. A result that
cannot apply (unknown match, cancelled, another result already, a winner who does not play)
is decided as its error and changes nothing, so it cannot fail the others.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from ..domain import elo
from ..domain.board import BoardEntry
from ..domain.ids import GLOBAL_BOARD, player_room
from ..domain.models import MatchResultIn
from ..domain.publication import Draft, Publication, RankSlot
from ..store import outbox
from ..store.result_sql import GroupWrites
from ..store.rows import board_entry
from .errors import Conflict, Invalid, NotFound, ServiceError
from .match_views import change_row, change_slots, match_rooms, now_iso, result_json


@dataclass(frozen=True, slots=True)
class ResultJob:
    match_id: str
    body: MatchResultIn


@dataclass(frozen=True, slots=True)
class Decided:
    """What one result came to: the answer (or the error) and the events to publish (None
    when nothing changed: an error, or the same result sent again)."""

    answer: dict[str, Any] | ServiceError
    publication: Publication | None = None


def plan_results(
    jobs: Sequence[ResultJob],
    matches: dict[str, dict[str, Any]],
    players: Mapping[str, Mapping[str, Any]],
    k: float,
) -> tuple[list[Decided], GroupWrites]:
    """Decide `jobs` in order on the loaded rows (`matches` by id, updated in place as
    results complete them; `players` by id); returns each one's outcome and what to write."""
    entries = {pid: board_entry(SimpleNamespace(**row)) for pid, row in players.items()}
    writes = GroupWrites()
    decided: list[Decided] = []
    for job in jobs:
        row = matches.get(job.match_id)
        if row is None:
            decided.append(Decided(NotFound(f"no match {job.match_id!r}")))
            continue
        outcome = _decide(job, row, entries, k)
        if outcome.publication is not None:
            updated = outcome.publication.board
            for entry in updated:
                entries[entry.player_id] = entry
                writes.players[entry.player_id] = entry
            writes.matches.append({key: row[key] for key in _FINISHED_COLUMNS})
            writes.outbox.append(
                (outcome.publication.key or "", outcome.publication.to_json(), time.time())
            )
        decided.append(outcome)
    return decided, writes


_FINISHED_COLUMNS = (
    "match_id",
    "status",
    "winner_id",
    "draw",
    "rating_change_a",
    "rating_change_b",
    "completed_at",
)


def _decide(
    job: ResultJob, row: dict[str, Any], entries: Mapping[str, BoardEntry], k: float
) -> Decided:
    body, match_id = job.body, job.match_id
    ids = [row["player_a"], row["player_b"]]
    if body.winner_id is not None and body.winner_id not in ids:
        return Decided(Invalid(f"winner_id {body.winner_id!r} does not play in this match"))
    if row["status"] == "completed":
        if row["winner_id"] == body.winner_id and bool(row["draw"]) == body.draw:
            # the same result again: the same answer, no event
            return Decided(result_json(SimpleNamespace(**row)))
        return Decided(Conflict(f"match {match_id!r} is completed with another result"))
    if row["status"] == "cancelled":
        return Decided(Conflict(f"match {match_id!r} is cancelled"))
    a, b = entries[row["player_a"]], entries[row["player_b"]]
    score_a = 0.5 if body.draw else (1.0 if body.winner_id == a.player_id else 0.0)
    new_a, new_b, delta = elo.apply_result(a.rating, b.rating, score_a, k)
    updated = [played(a, new_a, score_a), played(b, new_b, 1.0 - score_a)]
    row.update(
        status="completed",
        winner_id=body.winner_id,
        draw=body.draw,
        rating_change_a=delta,
        rating_change_b=-delta,
        completed_at=now_iso(),
    )
    match = SimpleNamespace(**row)
    return Decided(result_json(match), result_publication(match, updated, delta))


def played(row: Any, rating: float, score: float) -> BoardEntry:
    """A player's row after one more game with `score` (1 win, 0.5 draw, 0 loss)."""
    return BoardEntry(
        player_id=row.player_id,
        name=row.name,
        rating=rating,
        wins=row.wins + (score == 1.0),
        losses=row.losses + (score == 0.0),
        draws=row.draws + (score == 0.5),
        games=row.games + 1,
        version=row.version + 1,
    )


def result_publication(match: Any, updated: list[BoardEntry], delta: float) -> Publication:
    """The events of a result. Every rank in them is a slot the engine fills when it applies
    the two rows: the rank right after, and the rank before as previous_rank."""
    body = result_json(match)
    events = [Draft((*match_rooms(match), GLOBAL_BOARD), "match:result", body)]
    changes: list[dict[str, Any]] = []
    slots: list[RankSlot] = []
    personal = []
    for index, (entry, change) in enumerate(zip(updated, (delta, -delta), strict=True)):
        pid = entry.player_id
        changes.append(change_row(entry, change))
        slots += change_slots(index, pid, previous_rank=True)
        personal.append(
            Draft(
                (player_room(pid),),
                "leaderboard:player_rank",
                {
                    "player_id": pid,
                    "rank": None,
                    "previous_rank": None,
                    "rating": entry.rating,
                    "delta": change,
                },
                (
                    RankSlot(("rank",), pid, "after"),
                    RankSlot(("previous_rank",), pid, "before"),
                ),
            )
        )
        personal.append(
            Draft(
                (player_room(pid),),
                "player:stats_update",
                {
                    "player_id": pid,
                    "rating": entry.rating,
                    "rank": None,
                    "wins": entry.wins,
                    "losses": entry.losses,
                    "draws": entry.draws,
                    "games": entry.games,
                },
                (RankSlot(("rank",), pid, "after"),),
            )
        )
    events.append(
        Draft(
            (GLOBAL_BOARD,),
            "leaderboard:update",
            {"match_id": match.match_id, "changes": changes},
            tuple(slots),
        )
    )
    return Publication(key=outbox.new_key(), board=tuple(updated), events=tuple(events + personal))
