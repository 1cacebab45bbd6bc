"""Rank slots (issue 8), on both engines: the engine fills the ranks an event asks for in the
same step that applies the publication's rows: "after" is the rank once the rows are applied,
"before" the rank before; a player not on the board has none (null). A row older than the
board's does not move the player, and its events carry the player's current rank. User text
that looks like a slot marker stays text."""

from __future__ import annotations

import json
from typing import Any

from quart_app.domain.board import BoardEntry
from quart_app.domain.publication import Draft, Publication, RankSlot
from quart_app.engine.base import Engine

from .conftest import ready_board, rows


def entry(pid: str, rating: float, version: int = 1, name: str | None = None) -> BoardEntry:
    return BoardEntry(pid, name or pid, rating, 0, 0, 0, 0, version)


def ranked(pid: str, name: str = "x") -> Draft:
    return Draft(
        (f"player:{pid}",),
        "leaderboard:player_rank",
        {"player_id": pid, "name": name, "rank": None, "previous_rank": None},
        (RankSlot(("rank",), pid, "after"), RankSlot(("previous_rank",), pid, "before")),
    )


async def publish(engine: Engine, *board: BoardEntry, events: tuple[Draft, ...]) -> list[Any]:
    published = await engine.publish(Publication(board=board, events=events))
    return [json.loads(event.text)["data"] for event in published]


async def test_ranks_before_and_after_the_rows_apply(engine: Engine) -> None:
    await engine.board_replace(rows(entry("a", 1300), entry("b", 1200), entry("c", 1200)))
    await ready_board(engine)
    # c overtakes a; b and c were tied at 1200 (ties by id: b before c)
    [data] = await publish(engine, entry("c", 1400, 2), events=(ranked("c"),))
    assert (data["previous_rank"], data["rank"]) == (3, 1)
    # a newcomer: no rank before
    [data] = await publish(engine, entry("d", 1250), events=(ranked("d"),))
    assert (data["previous_rank"], data["rank"]) == (None, 3)


async def test_an_older_row_leaves_the_board_and_carries_the_current_rank(
    engine: Engine,
) -> None:
    await engine.board_replace(rows(entry("a", 1300, 5), entry("b", 1200)))
    await ready_board(engine)
    [data] = await publish(engine, entry("a", 1000, 4), events=(ranked("a"),))
    assert (data["previous_rank"], data["rank"]) == (1, 1)
    assert (await engine.board_player("a")) == (1, entry("a", 1300, 5))


async def test_user_text_that_looks_like_a_slot_stays_text(engine: Engine) -> None:
    await engine.board_replace(rows(entry("a", 1300)))
    await ready_board(engine)
    name = '"@rank-0-0@" null 1 \\" \u2028'
    [data] = await publish(engine, events=(ranked("a", name),))
    assert data == {"player_id": "a", "name": name, "rank": 1, "previous_rank": 1}
