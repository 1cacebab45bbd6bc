"""The long-poll answer budget: at most so many answers per turn of the event loop, the rest
in later turns, in arrival order, none lost (fairness, issue 9)."""

from __future__ import annotations

import asyncio

from quart_app.web.turns import TurnBudget


async def test_answers_past_the_budget_go_out_in_later_turns_in_order() -> None:
    budget = TurnBudget(per_turn=2)
    answered: list[int] = []

    async def answer(n: int) -> None:
        await budget.take()
        answered.append(n)

    tasks = [asyncio.create_task(answer(n)) for n in range(5)]
    await asyncio.sleep(0)  # the tasks' first step: two fit in this turn
    assert answered == [0, 1]
    await asyncio.gather(*tasks)
    assert answered == [0, 1, 2, 3, 4]


async def test_a_taker_that_leaves_does_not_hold_a_place() -> None:
    budget = TurnBudget(per_turn=1)
    first, gone, stays = (asyncio.create_task(budget.take()) for _ in range(3))
    await asyncio.sleep(0)  # one turn: `first` took this turn's place, the others wait
    assert first.done() and not gone.done() and not stays.done()
    gone.cancel()
    await asyncio.wait_for(stays, 5)  # the next turn's one place goes to `stays`
    assert gone.cancelled()
