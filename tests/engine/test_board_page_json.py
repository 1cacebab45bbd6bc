"""A board page as the API's JSON text (`board_page_json`): the same entries as `board_page`,
on both engines. The Redis engine cuts them out of its stored rows instead of decoding and
re-encoding each one, so names that look like JSON structure are the case to check."""

from __future__ import annotations

import json

from quart_app.engine.base import BoardEntry, Publication

from .conftest import EngineFactory, draft, rows

TRICKY_NAMES = [
    'quote " inside',
    'a ,"games":7} fake field',
    "back\\slash\\",
    "unicode é ☃ 🎮",
    "",
    '{"rank":1}',
]


def _board() -> list[BoardEntry]:
    entries = [
        BoardEntry(
            f"p{i:03d}", TRICKY_NAMES[i % len(TRICKY_NAMES)], 1200.0 + i / 3, i, 2, 1, i + 3, 1
        )
        for i in range(30)
    ]
    # ties, an integral rating and one with many digits
    entries += [
        BoardEntry("tie-a", "tie", 1500.0, 1, 0, 0, 1, 1),
        BoardEntry("tie-b", "tie", 1500.0, 1, 0, 0, 1, 1),
        BoardEntry("exact", "exact", 1234.5678901234567, 9, 9, 9, 27, 4),
    ]
    return entries


async def test_a_page_as_json_is_the_page_of_entries(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    await engine.board_replace(rows(*_board()))
    for offset, limit in [(0, 100), (0, 1), (5, 10), (30, 100), (32, 5), (33, 5), (500, 10)]:
        ranked, total = await engine.board_page(offset, limit)
        head, text, json_total = await engine.board_page_json(offset, limit)
        assert json_total == total == 33
        assert head == await engine.head()
        expected = [entry.as_entry(rank) for rank, entry in ranked]
        assert json.loads(text) == expected, (offset, limit)
        # what a client sees: exactly the Entry fields, in the documented order
        for entry in json.loads(text):
            assert list(entry) == ["rank", "player_id", "name", "rating", "wins", "losses", "draws"]


async def test_ratings_keep_every_digit(make_engine: EngineFactory) -> None:
    """The rating is the stored float, not one rounded to 14 digits (Lua's number format)."""
    engine = await make_engine()
    await engine.board_replace(rows(*_board()))
    _, text, _ = await engine.board_page_json(0, 1)
    assert '"rating":1500.0' in text.replace(" ", "")
    _, text, _ = await engine.board_page_json(2, 1)
    [entry] = json.loads(text)
    assert entry["player_id"] == "exact" and entry["rating"] == 1234.5678901234567


async def test_the_head_comes_with_the_page(make_engine: EngineFactory) -> None:
    """The log position read with the page (the API's cursor) counts every event before it."""
    engine = await make_engine()
    await engine.board_replace(rows(*_board()))
    before, _, _ = await engine.board_page_json(0, 10)
    published = await engine.publish(Publication(events=(draft(1), draft(2))))
    head, _, _ = await engine.board_page_json(0, 10)
    assert head == before + 2 == published[-1].seq
