"""A player's name: the rule /openapi.json documents (NAME_PATTERN, read by clients and by
schemathesis with Python's `re`) and the rule the server applies (RenameIn) are one rule.

Found by schemathesis: "ô\\t" was accepted (the server strips surrounding whitespace, tabs
included) though the document's pattern refused a trailing tab. The property covers the
class: any name built from letters, spaces, whitespace and control characters is accepted
by both or refused by both."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from quart_app.domain.models import NAME_PATTERN, RenameIn

CHARACTERS = st.sampled_from(
    ["a", "ô", "Z", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x00", "\x7f",
     "\x85", "\xa0", "\u2028", "\u3000", "\ufeff", "-"]
)  # fmt: skip


def _accepted(name: str) -> bool:
    try:
        RenameIn.model_validate({"name": name})
    except ValidationError:
        return False
    return True


@settings(max_examples=2000, deadline=None)
@given(st.text(CHARACTERS, max_size=8))
def test_the_documented_pattern_and_the_server_agree_on_every_name(name: str) -> None:
    assert (re.search(NAME_PATTERN, name) is not None) == _accepted(name), repr(name)


@pytest.mark.parametrize(
    ("sent", "stored"), [("ô\t", "ô"), ("  Ann  ", "Ann"), ("\nBo b\r\n", "Bo b")]
)
def test_surrounding_whitespace_is_dropped(sent: str, stored: str) -> None:
    assert RenameIn.model_validate({"name": sent}).name == stored
