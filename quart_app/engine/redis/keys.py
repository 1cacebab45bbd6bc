"""The names of every Redis key and channel of one deployment, in one place.

All start with the deployment's prefix (default ``lrp:``). Give the prefix a hash tag such as
``{lrp}:`` to run on Redis Cluster: every script then touches one slot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    prefix: str

    @property
    def bus(self) -> str:
        """The pub/sub channel of the event log (one message per script run that appended)."""
        return self.prefix + "bus"

    @property
    def log(self) -> list[str]:
        """The meta hash {epoch, seq} and the log stream: KEYS[1..2] of every log script."""
        return [self.prefix + "meta", self.prefix + "log"]

    def applied(self, publication_key: str) -> str:
        """The idempotency guard of one publication key."""
        return self.prefix + "applied:" + publication_key

    @property
    def board(self) -> list[str]:
        """The live board: zset player -> -rating, hash player -> JSON, hash player -> version."""
        return [self.prefix + "board", self.prefix + "players", self.prefix + "versions"]

    @property
    def board_ready(self) -> str:
        return self.prefix + "board:ready"

    @property
    def board_read(self) -> list[str]:
        """What the board reads need: the zset, the rows, and the "board is whole" marker."""
        return [self.prefix + "board", self.prefix + "players", self.board_ready]

    @property
    def board_next(self) -> list[str]:
        """A running rebuild: its token, then the board it builds."""
        p = self.prefix
        return [
            p + "board:rebuild",
            p + "board:next",
            p + "board:next:players",
            p + "board:next:versions",
        ]

    @property
    def presence(self) -> list[str]:
        """KEYS[1..6] of every presence script: the log's two, then the cluster-wide four."""
        p = self.prefix
        return [
            *self.log,
            p + "presence:instances",
            p + "presence:polls",
            p + "presence:conns",
            p + "presence:online",
        ]

    @property
    def online(self) -> str:
        return self.prefix + "presence:online"

    def presence_of(self, instance_id: str) -> list[str]:
        """The presence keys, then KEYS[7]: that instance's own hash of counts."""
        return [*self.presence, f"{self.prefix}presence:instance:{instance_id}"]
