"""Natural batching of concurrent by-id requests: scored together, answered separately.

A by-id request costs little model time (one store read, three LightGBM calls on one row), so under concurrent
load its fixed costs dominate: a thread hop, one SQLite transaction, three trips through LightGBM's Python
wrapper. :class:`RequestCoalescer` runs at most one scoring call at a time in the thread pool; the requests that
arrive meanwhile queue up and are scored as the next call, as one matrix (one store read, one ``predict``, one
``pred_contrib``). Nothing waits for a timer: a request that finds the scorer idle is scored at once (batch of
one), so a lone request pays no added latency and the batch size grows only with the load.

Only requests whose customers are all given by id, that :meth:`OnlineScorer.check` has passed and that share an
``as_of`` are merged; each gets exactly its own customers back, in its own order, and the same response it would
get alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from concurrent.futures import Executor
from typing import Any

from serving.online import OnlineAnswer, OnlineScorer

MAX_BATCH_CUSTOMERS = 256
"""Customers merged into one scoring call at most (a request larger than this is scored alone)."""


@dataclasses.dataclass
class _Pending:
    customers: list[dict[str, Any]]
    as_of: dt.date | None
    future: asyncio.Future


class RequestCoalescer:
    """Score concurrent by-id requests in merged calls on ``executor``; use from one event loop only."""

    def __init__(self, scorer: OnlineScorer, executor: Executor, max_customers: int = MAX_BATCH_CUSTOMERS):
        self.scorer = scorer
        self.executor = executor
        self.max_customers = max_customers
        self._queue: list[_Pending] = []
        self._task: asyncio.Task | None = None
        """The drain task while one runs (referenced: the loop keeps only weak references to tasks)."""
        self.batches = 0
        """Scoring calls made so far (with :attr:`requests`, the mean batch size)."""
        self.requests = 0

    async def predict(self, customers: list[dict[str, Any]], as_of: dt.date | None) -> OnlineAnswer:
        """The scored answer of one checked, id-only request."""
        loop = asyncio.get_running_loop()
        pending = _Pending(customers, as_of, loop.create_future())
        self._queue.append(pending)
        if self._task is None or self._task.done():  # the drain only ends with an empty queue, between two awaits
            self._task = loop.create_task(self._drain())
        return await pending.future

    def _next_batch(self) -> list[_Pending]:
        """The oldest request and the queued ones with the same ``as_of`` that fit in ``max_customers``."""
        first = self._queue[0]
        batch, rest, size = [first], [], len(first.customers)
        for pending in self._queue[1:]:
            if pending.as_of == first.as_of and size + len(pending.customers) <= self.max_customers:
                batch.append(pending)
                size += len(pending.customers)
            else:
                rest.append(pending)
        self._queue = rest
        return batch

    def _score(self, batch: list[_Pending]) -> list[OnlineAnswer]:
        merged = [c for pending in batch for c in pending.customers]
        answer = self.scorer.score_checked(merged, batch[0].as_of)
        return answer.split([len(p.customers) for p in batch])

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = self._next_batch()
            self.batches += 1
            self.requests += len(batch)
            try:
                answers = await loop.run_in_executor(self.executor, self._score, batch)
            except Exception as exc:  # every request of the batch gets the error, none is left waiting
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            for pending, answer in zip(batch, answers, strict=True):
                if not pending.future.done():  # a client that went away cancelled its future
                    pending.future.set_result(answer)
