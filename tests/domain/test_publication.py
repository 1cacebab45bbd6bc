"""Rank slots as text (what the Redis engine's script fills in): the cut parts joined with the
ranks are the JSON of the data with the ranks filled in, even when user text holds the very
marker the cut uses (another marker is drawn)."""

from __future__ import annotations

import itertools
import json

import pytest

from quart_app.domain import publication
from quart_app.domain.publication import Draft, RankSlot


def fill(draft: Draft, ranks: dict[str, tuple[int | None, int | None]]) -> str:
    parts, slots = draft.split_json()
    text = parts[0]
    for slot, part in zip(slots, parts[1:], strict=True):
        before, after = ranks[slot.player_id]
        text += json.dumps(after if slot.when == "after" else before) + part
    return text


def test_a_name_holding_the_marker_does_not_become_a_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = itertools.chain(["aa"], itertools.repeat("bb"))
    monkeypatch.setattr(publication.secrets, "token_hex", lambda _n: next(tokens))
    name = 'x"@rank-aa-0@"'  # what the first marker would look like, quotes included
    draft = Draft(
        ("player:p",),
        "leaderboard:player_rank",
        {"name": name, "rank": None, "previous_rank": None},
        (RankSlot(("rank",), "p", "after"), RankSlot(("previous_rank",), "p", "before")),
    )
    text = fill(draft, {"p": (None, 7)})
    assert json.loads(text) == {"name": name, "rank": 7, "previous_rank": None}
    assert json.loads(text) == draft.ranked_data({"p": (None, 7)})


def test_a_draft_round_trips_through_the_outbox_json() -> None:
    draft = Draft(
        ("r",),
        "e",
        {"changes": [{"rank": None}]},
        (RankSlot(("changes", 0, "rank"), "p", "after"),),
    )
    assert Draft.from_json(json.loads(json.dumps(draft.to_json()))) == draft


def test_ranked_data_fills_copies_and_leaves_the_draft_as_it_was() -> None:
    """The engine fills the same draft once per publish (and the relay may publish it again):
    filling must never write into the draft's own data, nested or not."""
    data = {
        "match_id": "m",
        "changes": [
            {"player_id": "a", "rank": None, "previous_rank": None, "tags": ["x"]},
            {"player_id": "b", "rank": None, "previous_rank": None},
        ],
    }
    original = json.loads(json.dumps(data))
    draft = Draft(
        ("leaderboard:global",),
        "leaderboard:update",
        data,
        (
            RankSlot(("changes", 0, "rank"), "a", "after"),
            RankSlot(("changes", 0, "previous_rank"), "a", "before"),
            RankSlot(("changes", 1, "rank"), "b", "after"),
        ),
    )
    filled = draft.ranked_data({"a": (5, 3), "b": (None, 9)})
    assert filled["changes"][0] == {
        "player_id": "a",
        "rank": 3,
        "previous_rank": 5,
        "tags": ["x"],
    }
    assert filled["changes"][1] == {"player_id": "b", "rank": 9, "previous_rank": None}
    assert data == original
    again = draft.ranked_data({"a": (1, 2), "b": (3, 4)})
    assert again["changes"][0]["rank"] == 2 and filled["changes"][0]["rank"] == 3


def test_a_board_row_has_every_field_of_the_entry() -> None:
    from dataclasses import asdict

    from quart_app.domain.board import BoardEntry

    entry = BoardEntry("p", "Pat", 1012.5, 3, 2, 1, 6, 7)
    assert entry.as_row() == asdict(entry)
    assert BoardEntry.from_json(entry.to_json()) == entry
