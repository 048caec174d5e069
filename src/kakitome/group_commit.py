"""Group commit for injection: many submitters, one transaction.

Requests (the HTTP API, SMTP submission, the CLI, campaigns) hand their prepared messages
to ``GroupCommitter.submit`` and wait. One committer task per event loop takes everything
that is waiting - up to ``max_batch`` messages - and stores it with one call of the commit
function (``QueueStore.inject_many``: one transaction, one fsync), then resolves each waiter with
its own ids, in order. While that commit runs, new submissions queue up and go in the next
one, so under load the number of transactions falls with the concurrency, and a lone
submission is committed at once (``linger`` seconds of waiting for company, 0 by default).

Guarantees:

- a waiter is resolved only after the commit that holds its messages returned: the ids
  mean committed, exactly as with a direct ``inject_many`` call;
- a submission (one ``submit`` call) is never split between transactions;
- when a commit fails, every waiter of that batch gets a ``StorageError`` of its own
  (nothing of the batch is committed: it was one transaction);
- a waiter that was cancelled before its batch started (its client went away) is left out
  of the batch;
- when the event loop stops (the committer task is cancelled): waiters of the batch in
  flight are cancelled (whether it committed is unknown; nothing was acknowledged), and
  waiters still queued get ``StorageError`` (nothing of theirs was written).

The committer task exists only while there is work: it ends when the queue is empty and
is started again by the next submission, so there is nothing to start or stop, and an
idle process holds no task. Use from one event loop at a time (like ``Database``); a new loop
(a second ``asyncio.run``) starts afresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from kakitome.errors import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_BATCH = 256

CommitFunction = Callable[[Sequence[T]], Awaitable[list[str]]]


@dataclass(slots=True)
class _Unit(Generic[T]):
    """One submission: its items and the future its caller awaits."""

    items: Sequence[T]
    future: asyncio.Future[list[str]]


class GroupCommitter(Generic[T]):
    """Batches submissions from concurrent tasks into single commits.

    ``commit(items) -> ids`` must store all items in one transaction and return one id
    per item, in order (``QueueStore.inject_many``), or raise (``StorageError``).
    """

    def __init__(
        self,
        commit: CommitFunction[T],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        linger: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._commit = commit
        self.max_batch = max_batch
        self.linger = linger
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: deque[_Unit[T]] = deque()
        self._task: asyncio.Task[None] | None = None
        # Counters, for tests and the curious: commits made and items committed.
        self.commits = 0
        self.committed = 0

    async def submit(self, items: Sequence[T]) -> list[str]:
        """Queue ``items`` for the next commit; their ids once it is committed."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new event loop: whatever the old one left is unreachable from here.
            self._loop = loop
            self._pending = deque()
            self._task = None
        future: asyncio.Future[list[str]] = loop.create_future()
        self._pending.append(_Unit(list(items), future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(self._pending), name="group-commit")
        return await future

    @property
    def waiting(self) -> int:
        """Submissions queued and not yet in a commit."""
        return len(self._pending)

    async def _run(self, pending: deque[_Unit[T]]) -> None:
        batch: list[_Unit[T]] = []
        try:
            while pending:
                if self.linger > 0 and self._count(pending) < self.max_batch:
                    await asyncio.sleep(self.linger)
                batch = self._take(pending)
                if batch:
                    await self._commit_batch(batch)
                batch = []
        except BaseException:
            # Cancelled (the loop is stopping) or worse. The batch in flight may or may not
            # have committed: its waiters learn nothing was acknowledged by cancellation.
            for unit in batch:
                if not unit.future.done():
                    unit.future.cancel()
            while pending:
                unit = pending.popleft()
                if not unit.future.done():
                    unit.future.set_exception(
                        StorageError("the service is stopping; the message was not stored")
                    )
            raise

    def _count(self, pending: deque[_Unit[T]]) -> int:
        return sum(len(unit.items) for unit in pending)

    def _take(self, pending: deque[_Unit[T]]) -> list[_Unit[T]]:
        """Units from the front of the queue up to max_batch items (at least one unit);
        cancelled waiters are dropped."""
        batch: list[_Unit[T]] = []
        size = 0
        while pending:
            unit = pending[0]
            if unit.future.done():
                pending.popleft()
                continue
            if batch and size + len(unit.items) > self.max_batch:
                break
            pending.popleft()
            batch.append(unit)
            size += len(unit.items)
        return batch

    async def _commit_batch(self, batch: list[_Unit[T]]) -> None:
        items = [item for unit in batch for item in unit.items]
        try:
            ids = await self._commit(items)
        except Exception as exc:
            if not isinstance(exc, StorageError):
                log.exception("group commit failed")
            text = str(exc) if isinstance(exc, StorageError) else f"commit failed: {exc!r}"
            for unit in batch:
                if not unit.future.done():
                    # One exception object per waiter: each is raised in its own task.
                    error = StorageError(text)
                    error.__cause__ = exc
                    unit.future.set_exception(error)
            return
        self.commits += 1
        self.committed += len(items)
        position = 0
        for unit in batch:
            end = position + len(unit.items)
            if not unit.future.done():
                unit.future.set_result(list(ids[position:end]))
            position = end
