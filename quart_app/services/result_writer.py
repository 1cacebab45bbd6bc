"""Group commit of match results: one writer task per instance.

Requests queue their result; the writer takes everything queued (up to MAX_GROUP) and
applies it in one transaction (store/result_sql.py), deciding the results one after the other
in queue order on the rows the ones before left (services/result_plan.py). So a database that
allows one writer at a time (SQLite) or pays a round trip and a flush per commit (both) pays
them once per group instead of once per result, while ELO stays exactly that of a serial
replay in commit order.

After the commit, a second task publishes the group's events in commit order (in one engine
round trip where no two of them share a match or a player; together with the groups committed
while its previous round trip was under way) and answers each request once its
events were offered to the engine (as before: normally published before the
answer; if not, the outbox relay publishes them later). It runs beside the writer, so the next
group's transaction overlaps this group's publishing.

Failures stay with their result: a result that cannot apply is decided as its error before
anything is written; if the group's transaction fails anyway (a statement the database
refuses), each result of it is applied again alone, so only the bad one fails. Losing the
database fails the whole group with DatabaseUnavailable (503), and nothing of it applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from ..domain.publication import Publication
from ..store.database import DatabaseUnavailable
from ..store.outbox import Relay
from ..store.result_sql import ResultSql
from .result_plan import Decided, ResultJob, plan_results

log = logging.getLogger(__name__)

# Results in one transaction at most: bounds the transaction's time and the wait of the
# group's first request behind the rest of it.
MAX_GROUP = 128

Outcome = Decided | BaseException


@dataclass(slots=True)
class _Queued:
    job: ResultJob
    answer: asyncio.Future[object]


class ResultWriter:
    def __init__(self, sql: ResultSql, relay: Relay, k: float) -> None:
        self.sql = sql
        self.relay = relay
        self.k = k
        # Counters (tests, /metrics): transactions committed and results decided in them.
        self.groups = 0
        self.results = 0
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue()
        self._committed: asyncio.Queue[list[tuple[_Queued, Outcome]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def submit(self, job: ResultJob) -> object:
        """The answer of the result once its group committed and its events were offered to
        the engine; raises its ServiceError, or DatabaseUnavailable."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._write(), name="result-writer"),
                asyncio.create_task(self._publish(), name="result-publisher"),
            ]
        answer: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Queued(job, answer))
        return await answer

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.sql.close()

    async def _write(self) -> None:
        while True:
            group = [await self._queue.get()]
            while len(group) < MAX_GROUP and not self._queue.empty():
                group.append(self._queue.get_nowait())
            outcomes = await self._commit(group)
            self._committed.put_nowait(list(zip(group, outcomes, strict=True)))

    async def _commit(self, group: list[_Queued]) -> list[Outcome]:
        jobs = [queued.job for queued in group]
        try:
            decided: list[Decided] = await self.sql.apply(
                [job.match_id for job in jobs],
                lambda matches, players: plan_results(jobs, matches, players, self.k),
            )
        except DatabaseUnavailable as exc:
            return [DatabaseUnavailable(str(exc)) for _ in group]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a refused statement: find which result
            if len(group) == 1:
                return [exc]
            log.warning("a group of %d results failed (%r); applying each alone", len(group), exc)
            return [(await self._commit([queued]))[0] for queued in group]
        self.groups += 1
        self.results += len(group)
        return list(decided)

    async def _publish(self) -> None:
        while True:
            committed = await self._committed.get()
            # The groups committed while the last round trip was under way share this one:
            # results that trickle in are committed a few at a time, and one round trip per
            # group made the last answers wait as long as one per result.
            while len(committed) < MAX_GROUP and not self._committed.empty():
                committed += self._committed.get_nowait()
            publications = [
                outcome.publication
                for _, outcome in committed
                if isinstance(outcome, Decided) and outcome.publication is not None
            ]
            published = [
                publication.key
                for publication, done in zip(
                    publications, await self._offer(publications), strict=True
                )
                if done and publication.key
            ]
            if published:
                # The group's rows go in one statement, not one transaction per row.
                try:
                    await self.sql.delete_published(published)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - published anyway; the relay deletes them
                    self.relay.delete_later(published)
            for queued, outcome in committed:
                _answer(queued.answer, outcome)

    async def _offer(self, publications: list[Publication]) -> list[bool]:
        """The group's publications in commit order, in as few round trips as that order
        allows (one, unless two share a match or a player): each round trip is a wait behind
        whatever else the engine does (at 1,000,000 players, a rebuild's staging scripts),
        and one at a time the group's last answer paid it once per result."""
        # This task answers every request of the group: nothing may end it but cancellation.
        try:
            return await self.relay.publish_many(publications)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the commit stands; the relay publishes the rows
            log.exception("publishing %d outbox rows failed; left to the relay", len(publications))
            return [False] * len(publications)


def _answer(answer: asyncio.Future[object], outcome: Outcome) -> None:
    if answer.done():  # the request went away (its client left): the result stands
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
    elif isinstance(outcome.answer, BaseException):
        answer.set_exception(outcome.answer)
    else:
        answer.set_result(outcome.answer)
