"""Matches: create, start, progress, result, cancel; players appear on first match.

Every change is one SQL transaction that also writes its events to the outbox, so a 2xx
answer means the change is durable and its events will be delivered.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from databases.core import Connection

from ..domain import elo
from ..domain.board import BoardEntry
from ..domain.ids import GLOBAL_BOARD, MATCHES, match_room, player_room
from ..domain.models import MatchCreate, MatchProgressIn, MatchResultIn
from ..domain.publication import Draft, Publication, RankSlot
from ..engine.base import Engine, EngineUnavailable
from ..store import outbox
from ..store.database import Store
from ..store.rows import board_entry
from ..store.tables import matches, players
from .errors import Conflict, Invalid, NotFound, Unavailable

# The result path's statements as SQL text with bound parameters: SQLAlchemy Core would
# compile each statement again on every call through `databases` (measured: about a quarter
# of a result's CPU), while text is only bound.
_SELECT_MATCH = "SELECT * FROM matches WHERE match_id = :match_id"
_SELECT_PLAYERS = "SELECT * FROM players WHERE player_id IN (:first, :second) ORDER BY player_id"
_UPDATE_PLAYER = (
    "UPDATE players SET rating = :rating, wins = :wins, losses = :losses, draws = :draws,"
    " games = :games, version = :version WHERE player_id = :player_id"
)
_FINISH_MATCH = (
    "UPDATE matches SET status = :status, winner_id = :winner_id, draw = :draw,"
    " rating_change_a = :rating_change_a, rating_change_b = :rating_change_b,"
    " completed_at = :completed_at WHERE match_id = :match_id"
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def match_json(row: Any) -> dict[str, Any]:
    return {
        "match_id": row.match_id,
        "player_ids": [row.player_a, row.player_b],
        "status": row.status,
        "winner_id": row.winner_id,
        "draw": bool(row.draw),
        "created_at": row.created_at,
        "started_at": row.started_at,
        "completed_at": row.completed_at,
        "scheduled_at": row.scheduled_at,
    }


def result_json(row: Any) -> dict[str, Any]:
    body = match_json(row)
    body["rating_changes"] = {row.player_a: row.rating_change_a, row.player_b: row.rating_change_b}
    return body


def match_rooms(row: Any) -> tuple[str, ...]:
    return (MATCHES, match_room(row.match_id), player_room(row.player_a), player_room(row.player_b))


def change_row(entry: BoardEntry, delta: float) -> dict[str, Any]:
    """A row of `leaderboard:update` (PROTOCOL 2). `rank` and `previous_rank` are left for
    the engine to fill (see change_slots; a newcomer's previous_rank stays null).
    `version` is the player's row version: events of two instances may reach the log out of
    commit order, and a client keeps, per player, the row with the highest version."""
    return {
        **entry.as_entry(0),
        "previous_rank": None,
        "delta": delta,
        "version": entry.version,
    }


def change_slots(index: int, player_id: str, previous_rank: bool) -> list[RankSlot]:
    """Where the engine puts the ranks of change row `index` (PROTOCOL 2: the rank right
    after the event; previous_rank: before the publication's rows applied)."""
    slots = [RankSlot(("changes", index, "rank"), player_id, "after")]
    if previous_rank:
        slots.append(RankSlot(("changes", index, "previous_rank"), player_id, "before"))
    return slots


class MatchService:
    def __init__(
        self, store: Store, relay: outbox.Relay, engine: Engine, k: float, initial_rating: float
    ) -> None:
        self.store = store
        self.relay = relay
        self.engine = engine
        self.k = k
        self.initial_rating = initial_rating

    # helpers -----------------------------------------------------------------------------
    def _locking(self, statement: str) -> str:
        # SQLite has no row locks; BEGIN IMMEDIATE already made the transaction the only writer.
        return statement if self.store.is_sqlite else statement + " FOR UPDATE"

    async def _locked_match(self, conn: Connection, match_id: str) -> Any:
        row = await conn.fetch_one(self._locking(_SELECT_MATCH), {"match_id": match_id})
        if row is None:
            raise NotFound(f"no match {match_id!r}")
        return row

    # use cases -----------------------------------------------------------------------------
    async def get(self, match_id: str) -> dict[str, Any]:
        row: Any = await self.store.db.fetch_one(
            sa.select(matches).where(matches.c.match_id == match_id)
        )
        if row is None:
            raise NotFound(f"no match {match_id!r}")
        return result_json(row) if row.status == "completed" else match_json(row)

    async def create(self, body: MatchCreate, match_id: str) -> tuple[int, dict[str, Any]]:
        """201 and the new match, or 200 and the stored one when the same id and players
        were created before (a retried create)."""
        async with self.store.write() as conn:
            existing: Any = await conn.fetch_one(
                sa.select(matches).where(matches.c.match_id == match_id)
            )
            if existing is not None:
                if sorted([existing.player_a, existing.player_b]) != sorted(body.player_ids):
                    raise Conflict(f"match {match_id!r} exists with other players")
                return 200, match_json(existing)
            created = now_iso()
            known_rows: list[Any] = await conn.fetch_all(
                sa.select(players.c.player_id).where(players.c.player_id.in_(body.player_ids))
            )
            known = {r.player_id for r in known_rows}
            new_players = [
                BoardEntry(
                    player_id=pid,
                    name=pid,
                    rating=self.initial_rating,
                    wins=0,
                    losses=0,
                    draws=0,
                    games=0,
                    version=1,
                )
                for pid in body.player_ids
                if pid not in known
            ]
            # In id order, as result() locks them: two creates naming the same new players in
            # opposite orders would otherwise deadlock on each other's uncommitted rows.
            for entry in sorted(new_players, key=lambda e: e.player_id):
                # A concurrent create may add the same player first (PostgreSQL): then it is
                # that create's newcomer, not this one's.
                if (
                    await conn.fetch_one(
                        self.store.insert_ignore(players)
                        .values(
                            player_id=entry.player_id,
                            name=entry.name,
                            rating=entry.rating,
                            version=entry.version,
                            created_at=created,
                        )
                        .returning(players.c.player_id)
                    )
                    is None
                ):
                    new_players.remove(entry)
            inserted = await conn.fetch_one(
                self.store.insert_ignore(matches)
                .values(
                    match_id=match_id,
                    player_a=body.player_ids[0],
                    player_b=body.player_ids[1],
                    status="scheduled",
                    draw=False,
                    created_at=created,
                    scheduled_at=iso(body.scheduled_at),
                )
                .returning(matches.c.match_id)
            )
            row: Any = await conn.fetch_one(
                sa.select(matches).where(matches.c.match_id == match_id)
            )
            if inserted is None:
                # PostgreSQL: a concurrent create of this id committed while the insert waited
                # for it (SQLite's single writer cannot get here): answer as for a retry.
                if sorted([row.player_a, row.player_b]) != sorted(body.player_ids):
                    raise Conflict(f"match {match_id!r} exists with other players")
                return 200, match_json(row)
            events = [Draft(match_rooms(row), "match:created", match_json(row))]
            if new_players:
                # Newcomers join the board (and push down everyone below the initial rating):
                # the board's watchers hear of it like of any other change.
                # Their ranks are the engine's to fill in (no count over the table here).
                changes = [change_row(entry, 0.0) for entry in new_players]
                slots = [
                    slot
                    for index, entry in enumerate(new_players)
                    for slot in change_slots(index, entry.player_id, previous_rank=False)
                ]
                events.append(
                    Draft(
                        (GLOBAL_BOARD,),
                        "leaderboard:update",
                        {"match_id": match_id, "changes": changes},
                        tuple(slots),
                    )
                )
            publication = Publication(
                key=outbox.new_key(), board=tuple(new_players), events=tuple(events)
            )
            await outbox.add(conn, publication)
        await self.relay.publish(publication)
        return 201, match_json(row)

    async def _transition(
        self, match_id: str, target: str, allowed_from: set[str], event: str, stamp: str | None
    ) -> dict[str, Any]:
        async with self.store.write() as conn:
            row = await self._locked_match(conn, match_id)
            if row.status == target:
                return match_json(row)  # a repeated transition: same answer, no event
            if row.status not in allowed_from:
                raise Conflict(f"match {match_id!r} is {row.status}; cannot become {target}")
            values: dict[str, Any] = {"status": target}
            if stamp:
                values[stamp] = now_iso()
            await conn.execute(
                matches.update().where(matches.c.match_id == match_id).values(**values)
            )
            row = await conn.fetch_one(sa.select(matches).where(matches.c.match_id == match_id))
            publication = Publication(
                key=outbox.new_key(), events=(Draft(match_rooms(row), event, match_json(row)),)
            )
            await outbox.add(conn, publication)
        await self.relay.publish(publication)
        return match_json(row)

    async def start(self, match_id: str) -> dict[str, Any]:
        return await self._transition(
            match_id, "live", {"scheduled"}, "match:started", "started_at"
        )

    async def cancel(self, match_id: str) -> dict[str, Any]:
        return await self._transition(
            match_id, "cancelled", {"scheduled", "live"}, "match:cancelled", "completed_at"
        )

    async def progress(self, match_id: str, body: MatchProgressIn) -> str:
        """Publish live progress (not stored beyond the log); returns the event's cursor."""
        row: Any = await self.store.db.fetch_one(
            sa.select(matches).where(matches.c.match_id == match_id)
        )
        if row is None:
            raise NotFound(f"no match {match_id!r}")
        if row.status != "live":
            raise Conflict(f"match {match_id!r} is {row.status}, not live")
        unknown = set(body.score) - {row.player_a, row.player_b}
        if unknown:
            raise Invalid(f"score names players not in this match: {sorted(unknown)}")
        data = {"match_id": match_id, "score": body.score, "detail": body.detail}
        try:
            events = await self.engine.publish(
                Publication(events=(Draft(match_rooms(row), "match:progress", data),))
            )
        except EngineUnavailable:
            raise Unavailable("the event log is unavailable; retry") from None
        return events[-1].cursor

    async def result(self, match_id: str, body: MatchResultIn) -> dict[str, Any]:
        async with self.store.write() as conn:
            row = await self._locked_match(conn, match_id)
            ids = [row.player_a, row.player_b]
            if body.winner_id is not None and body.winner_id not in ids:
                raise Invalid(f"winner_id {body.winner_id!r} does not play in this match")
            if row.status == "completed":
                if row.winner_id == body.winner_id and bool(row.draw) == body.draw:
                    return result_json(row)  # the same result again: the same answer
                raise Conflict(f"match {match_id!r} is completed with another result")
            if row.status == "cancelled":
                raise Conflict(f"match {match_id!r} is cancelled")

            # Lock both players in id order, so two results sharing a player cannot deadlock.
            first, second = sorted(ids)
            player_rows: list[Any] = await conn.fetch_all(
                self._locking(_SELECT_PLAYERS), {"first": first, "second": second}
            )
            locked = {p.player_id: p for p in player_rows}
            a, b = locked[row.player_a], locked[row.player_b]
            score_a = 0.5 if body.draw else (1.0 if body.winner_id == a.player_id else 0.0)
            new_a, new_b, delta = elo.apply_result(a.rating, b.rating, score_a, self.k)
            # The rows after the change, computed here rather than read back.
            updated = [
                _played(a, new_a, score_a),
                _played(b, new_b, 1.0 - score_a),
            ]
            for entry in updated:
                await conn.execute(
                    _UPDATE_PLAYER,
                    {
                        "player_id": entry.player_id,
                        "rating": entry.rating,
                        "wins": entry.wins,
                        "losses": entry.losses,
                        "draws": entry.draws,
                        "games": entry.games,
                        "version": entry.version,
                    },
                )
            finished = {
                "status": "completed",
                "winner_id": body.winner_id,
                "draw": body.draw,
                "rating_change_a": delta,
                "rating_change_b": -delta,
                "completed_at": now_iso(),
            }
            await conn.execute(_FINISH_MATCH, {**finished, "match_id": match_id})
            row = SimpleNamespace(**{**row._mapping, **finished})
            publication = self._result_publication(row, updated, delta)
            await outbox.add(conn, publication)
        await self.relay.publish(publication)
        return result_json(row)

    @staticmethod
    def _result_publication(match: Any, updated: list[BoardEntry], delta: float) -> Publication:
        """The events of a result. Every rank in them is a slot the engine fills when it
        applies the two rows: the rank right after, and the rank before as previous_rank."""
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
        return Publication(
            key=outbox.new_key(), board=tuple(updated), events=tuple(events + personal)
        )


def _played(row: Any, rating: float, score: float) -> BoardEntry:
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


class PlayerService:
    def __init__(self, store: Store, relay: outbox.Relay) -> None:
        self.store = store
        self.relay = relay

    async def rename(self, player_id: str, name: str) -> BoardEntry:
        async with self.store.write() as conn:
            row = await conn.fetch_one(
                self.store.for_update(sa.select(players).where(players.c.player_id == player_id))
            )
            if row is None:
                raise NotFound(f"no player {player_id!r}")
            await conn.execute(
                players.update()
                .where(players.c.player_id == player_id)
                .values(name=name, version=players.c.version + 1)
            )
            row = await conn.fetch_one(sa.select(players).where(players.c.player_id == player_id))
            entry = board_entry(row)
            # A rename moves nobody: the engine fills the rank before and after (equal).
            update = {"match_id": None, "changes": [change_row(entry, 0.0)]}
            slots = tuple(change_slots(0, entry.player_id, previous_rank=True))
            publication = Publication(
                key=outbox.new_key(),
                board=(entry,),
                events=(Draft((GLOBAL_BOARD,), "leaderboard:update", update, slots),),
            )
            await outbox.add(conn, publication)
        await self.relay.publish(publication)
        return entry
