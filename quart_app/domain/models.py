"""The shapes of PROTOCOL.md: request bodies and the objects the API returns."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
    model_validator,
)

from .ids import ID_PATTERN

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
MatchStatus = Literal["scheduled", "live", "completed", "cancelled"]
PUBLISH_DATA_LIMIT = 16 * 1024
# The JSON-schema form of the checks below that pydantic runs in Python (a validator's rule is
# invisible to /openapi.json): a client, or schemathesis, reading the document then knows
# exactly which bodies are accepted. Cc is U+0000-U+001F and U+007F-U+009F.
NO_CONTROL = "\\x00-\\x1f\\x7f-\\x9f"
# The whitespace dropped around a name: spelled out, not `\s`, which means other characters
# in ECMA-262 (the document's dialect), in Python's `re` and in str.strip().
NAME_SPACE = " \t\n\v\f\r"
_SPACE_CLASS = " \\t\\n\\v\\f\\r"
NAME_PATTERN = f"^[{_SPACE_CLASS}]*[^{NO_CONTROL} ][^{NO_CONTROL}]*[{_SPACE_CLASS}]*$"
# The room names ids.room_owner() accepts.
ROOM_PATTERN = "^(leaderboard:global|matches|presence|(match|player):" + ID_PATTERN[1:-1] + ")$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MatchCreate(_Body):
    match_id: Id | None = None
    player_ids: list[Id] = Field(
        min_length=2, max_length=2, json_schema_extra={"uniqueItems": True}
    )
    scheduled_at: datetime | None = None

    @field_validator("player_ids")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if value[0] == value[1]:
            raise ValueError("player_ids must be two distinct ids")
        return value

    @field_validator("scheduled_at", mode="before")
    @classmethod
    def _text(cls, value: object) -> object:
        # A time is an ISO 8601 string (PROTOCOL 2 and the document's date-time); pydantic
        # would read a number as seconds since 1970, so 0 became a 1970 match.
        if value is not None and not isinstance(value, str):
            raise ValueError("scheduled_at must be an ISO 8601 time string")
        return value

    @field_validator("scheduled_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # Stored in UTC; a time near year 1 or 9999 may have no UTC equivalent.
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("scheduled_at is out of range") from None


class MatchResultIn(_Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["winner_id"],
                    "properties": {"winner_id": {"type": "string"}, "draw": {"const": False}},
                },
                {
                    "required": ["draw"],
                    "properties": {"draw": {"const": True}, "winner_id": {"type": "null"}},
                },
            ]
        },
    )
    winner_id: Id | None = None
    # Strict: a result moves ratings for good, so "draw": "yes" or 1 is refused, not guessed.
    draw: StrictBool = False

    @model_validator(mode="after")
    def _one_outcome(self) -> MatchResultIn:
        if (self.winner_id is None) == (not self.draw):
            raise ValueError('give either "winner_id" or "draw": true')
        return self


class MatchProgressIn(_Body):
    # Keys are player ids: the document says "no other key" as the validation does.
    score: dict[Id, int] = Field(json_schema_extra={"additionalProperties": False})
    detail: dict[str, Any] | None = None


class PublishIn(_Body):
    room: str = Field(json_schema_extra={"pattern": ROOM_PATTERN})
    event: Literal["announcement"]
    # At most PUBLISH_DATA_LIMIT bytes of JSON: checked by the web layer, since PROTOCOL
    # answers 413 for it, not the 422 of a schema violation.
    data: dict[str, Any]

    def data_size(self) -> int:
        return len(json.dumps(self.data, separators=(",", ":")).encode())


class RenameIn(_Body):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        json_schema_extra={"pattern": NAME_PATTERN}
    )

    @field_validator("name", mode="before")
    @classmethod
    def _short(cls, value: object) -> object:
        # At most 64 characters as sent (the document's maxLength), surrounding spaces too:
        # 64 after stripping let a longer body through that the document says is refused.
        if isinstance(value, str):
            if len(value) > 64:
                raise ValueError("name must be at most 64 characters")
            return value.strip(NAME_SPACE)  # (only what NAME_PATTERN allows around a name)
        return value

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        # PostgreSQL cannot store NUL (the driver's error was a 500), and a board shows names
        # on one line: no control characters.
        if any(unicodedata.category(char) == "Cc" for char in value):
            raise ValueError("name must not contain control characters")
        return value


class SubscribeIn(_Body):
    connection_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    rooms: list[Annotated[str, Field(json_schema_extra={"pattern": ROOM_PATTERN})]] = Field(
        min_length=1, max_length=100
    )


class DevTokenIn(_Body):
    sub: Id
    scope: str = ""
    ttl_seconds: int = Field(3600, ge=1, le=7 * 86400)


class Match(BaseModel):
    match_id: str
    player_ids: list[str]
    status: MatchStatus
    winner_id: str | None
    draw: bool
    created_at: str
    started_at: str | None
    completed_at: str | None
    scheduled_at: str | None = None


class MatchWithChanges(Match):
    rating_changes: dict[str, float] | None = None


class Entry(BaseModel):
    rank: int
    player_id: str
    name: str
    rating: float
    wins: int
    losses: int
    draws: int


class PlayerOut(Entry):
    games: int
    online: bool


class LeaderboardPage(BaseModel):
    entries: list[Entry]
    total: int
    cursor: str


class Around(BaseModel):
    entries: list[Entry]


class Presence(BaseModel):
    online_count: int


class Published(BaseModel):
    id: str


class Rooms(BaseModel):
    rooms: list[str]


class DevToken(BaseModel):
    access_token: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
