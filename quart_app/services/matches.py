"""Matches: create, start, progress, result, cancel; players appear on first match.

Every change is one SQL transaction that also writes its events to the outbox, so a 2xx
answer means the change is durable and its events will be delivered.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from databases.core import Connection

from ..domain.board import BoardEntry
from ..domain.ids import GLOBAL_BOARD
from ..domain.models import MatchCreate, MatchProgressIn, MatchResultIn
from ..domain.publication import Draft, Publication
from ..engine.base import Engine, EngineUnavailable
from ..store import outbox
from ..store.database import Store
from ..store.result_sql import result_sql
from ..store.rows import board_entry
from ..store.tables import matches, players
from .errors import Conflict, Invalid, NotFound, Unavailable
from .match_views import (
    change_row,
    change_slots,
    iso,
    match_json,
    match_rooms,
    now_iso,
    result_json,
)
from .result_plan import ResultJob
from .result_writer import ResultWriter

_SELECT_MATCH = "SELECT * FROM matches WHERE match_id = :match_id"


class MatchService:
    def __init__(
        self, store: Store, relay: outbox.Relay, engine: Engine, k: float, initial_rating: float
    ) -> None:
        self.store = store
        self.relay = relay
        self.engine = engine
        self.k = k
        self.initial_rating = initial_rating
        # Results go through one writer per instance, several to a transaction.
        self.writer = ResultWriter(result_sql(store), relay, k)

    async def close(self) -> None:
        await self.writer.close()

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
        answer: Any = await self.writer.submit(ResultJob(match_id, body))
        return dict(answer)


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
