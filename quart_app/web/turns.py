"""At most so many long-poll steps per turn of the event loop (fairness, issue 9).

A crowd of pollers is a closed loop: every answer brings its poller straight back with the
next request. On a saturated instance each turn of the loop then held every answer that was
ready plus every re-poll that arrived, and a write (POST), which needs several turns, waited
behind a whole crowd at each of them (measured: POST p50 0.3-0.7 s under 300-1,000 pollers,
with the wake-ups already sliced). A poll takes a place when it arrives (its parse and its
first look at the log) and, if it had to wait for events, another one for its answer; the
rest wait for later turns, in arrival order. On an instance that is not saturated the budget
is never reached and costs nothing.
"""

from __future__ import annotations

import asyncio
from collections import deque

# Long-poll steps (arrivals and answers) per turn of the event loop.
ANSWERS_PER_TURN = 32


class TurnBudget:
    def __init__(self, per_turn: int = ANSWERS_PER_TURN) -> None:
        if per_turn < 1:
            raise ValueError("per_turn must be at least 1")
        self._per_turn = per_turn
        self._used = 0
        # Turns the budget has seen begin: a taker that finds it unchanged is still in the
        # turn of its last place (it never yielded since), and needs no second one.
        self.turn = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._turn_scheduled = False

    async def take(self) -> None:
        """Return once this turn (or a later one) has room for one more answer."""
        if self._used < self._per_turn and not self._waiting:
            self._used += 1
            self._schedule_next_turn()
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        self._schedule_next_turn()
        await turn

    def _schedule_next_turn(self) -> None:
        if not self._turn_scheduled:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_scheduled = False
        self._used = 0
        self.turn += 1
        while self._waiting and self._used < self._per_turn:
            turn = self._waiting.popleft()
            if not turn.done():  # (a poller that left cancelled its own)
                turn.set_result(None)
                self._used += 1
        if self._used:
            self._schedule_next_turn()
