"""Love Rank Pulse: a real-time ELO leaderboard service."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import create_app as create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> object:
    # `create_app` is imported on first use, not with the package: `rankpulse token`,
    # `rankpulse migrate` and every `import quart_app.<module>` would otherwise pay for Quart,
    # Hypercorn's app machinery and the whole service at start (about 1.7 s of CPU).
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
