"""Group commit: concurrent submissions share transactions; ids still mean committed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import event

from kakitome.config import Settings
from kakitome.errors import InputError, StorageError
from kakitome.group_commit import GroupCommitter
from kakitome.injection import Injector
from kakitome.queue.types import NewMessage
from kakitome.store import database, sqlite_thread
from kakitome.store.database import Database
from tests.fixtures_db import queue_store

SETTINGS = Settings.model_validate({})


def _count_commits(store: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per database transaction committed through the store's engine: those
    SQLAlchemy runs, and on SQLite those the store runs in one piece on the connection
    (kakitome.store.sqlite_thread.write_transaction)."""
    commits: list[int] = []
    event.listen(store.engine.sync_engine, "commit", lambda _conn: commits.append(1))
    in_one_piece = sqlite_thread.write_transaction

    async def counted(*args: Any, **kwargs: Any) -> Any:
        result = await in_one_piece(*args, **kwargs)
        commits.append(1)
        return result

    monkeypatch.setattr(database, "write_transaction", counted)
    return commits


async def test_concurrent_submits_share_transactions(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 concurrent submissions: every one gets its own id, committed with its own
    content, in far fewer than 200 transactions."""
    injector = Injector(queue_store(store), SETTINGS)
    messages = [
        injector.prepare_fields(
            from_="i@example.jp", to=[f"u{n}@example.com"], subject=f"件名 {n}", text=f"本文 {n}"
        )
        for n in range(200)
    ]
    commits = _count_commits(store, monkeypatch)
    ids = await asyncio.gather(*(injector.submit(m) for m in messages))
    assert len(set(ids)) == 200
    assert len(commits) <= 20, len(commits)
    assert injector.committer.commits == len(commits)
    assert injector.committer.committed == 200
    for n in (0, 77, 199):
        receipt = await queue_store(store).receipt(ids[n])
        assert receipt.subject == f"件名 {n}"
        assert [r.recipient for r in receipt.recipients] == [f"u{n}@example.com"]


async def test_submit_many_kept_together_in_order(store: Database) -> None:
    """submit_many returns ids in order; a submission larger than max_batch is one commit."""
    injector = Injector(queue_store(store), SETTINGS, max_batch=4)
    messages = [
        injector.prepare_fields(from_="i@example.jp", to=[f"u{n}@example.com"], text="x")
        for n in range(10)
    ]
    ids = await injector.submit_many(messages)
    assert injector.committer.commits == 1
    for n, message_id in enumerate(ids):
        receipt = await queue_store(store).receipt(message_id)
        assert receipt.recipients[0].recipient == f"u{n}@example.com"


async def test_no_recipients_refused_before_queueing(store: Database) -> None:
    """InputError before anything is queued; a bad message never fails a batch."""
    injector = Injector(queue_store(store), SETTINGS)
    good = injector.prepare_fields(from_="i@example.jp", to=["a@example.com"], text="x")
    bad = NewMessage(
        source="api", sender="", header_from="i@example.jp", subject="", content=b"x",
        recipients=(),
    )  # fmt: skip
    with pytest.raises(InputError):
        await injector.submit(bad)
    with pytest.raises(InputError):
        await injector.submit_many([good, bad])
    assert injector.committer.commits == 0
    assert await queue_store(store).list_deliveries() == []


class _GatedCommit:
    """A commit function that waits for ``gate``; the calls numbered in ``failing``
    (0-based) raise StorageError."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.calls: list[list[str]] = []
        self.failing = failing

    async def __call__(self, items: Sequence[str]) -> list[str]:
        number = len(self.calls)
        self.calls.append(list(items))
        self.started.set()
        await self.gate.wait()
        if number in self.failing:
            raise StorageError("database did not commit: disk full")
        return [f"id-{item}" for item in items]


async def test_failing_commit_fails_every_waiter() -> None:
    """While one commit runs, 20 submissions queue; their shared commit fails, and each of
    the 20 gets a StorageError of its own, while the first one succeeded."""
    commit = _GatedCommit(failing=frozenset({1}))
    committer: GroupCommitter[str] = GroupCommitter(commit)
    first = asyncio.create_task(committer.submit(["first"]))
    await commit.started.wait()
    rest = [asyncio.create_task(committer.submit([f"m{n}"])) for n in range(20)]
    await asyncio.sleep(0)
    assert committer.waiting == 20
    commit.gate.set()
    assert await first == ["id-first"]
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert all(isinstance(o, StorageError) for o in outcomes), outcomes
    assert len({id(o) for o in outcomes}) == 20  # one exception object each
    assert [len(call) for call in commit.calls] == [1, 20]  # the 20 in one transaction
    assert committer.commits == 1 and committer.committed == 1


async def test_failing_store_commit_is_503_worth_for_all(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the Injector and a Database whose transaction fails: every concurrent
    submitter raises StorageError and nothing is stored."""
    queue = queue_store(store)
    injector = Injector(queue, SETTINGS)
    messages = [
        injector.prepare_fields(from_="i@example.jp", to=[f"u{n}@example.com"], text="x")
        for n in range(50)
    ]
    calls: list[int] = []

    async def broken(batch: Sequence[NewMessage], *, now: float, lifetime: float) -> list[str]:
        calls.append(len(batch))
        await asyncio.sleep(0.01)
        raise StorageError("database did not commit: disk I/O error")

    monkeypatch.setattr(queue, "inject_many", broken)
    outcomes = await asyncio.gather(*(injector.submit(m) for m in messages), return_exceptions=True)
    assert all(isinstance(o, StorageError) for o in outcomes)
    assert sum(calls) == 50 and len(calls) < 50
    monkeypatch.undo()
    assert await queue.list_deliveries() == []


async def test_cancelled_waiter_left_out_of_the_batch() -> None:
    """A submitter that went away before its batch started is not committed."""
    commit = _GatedCommit()
    committer: GroupCommitter[str] = GroupCommitter(commit)
    first = asyncio.create_task(committer.submit(["a"]))
    await commit.started.wait()
    gone = asyncio.create_task(committer.submit(["gone"]))
    kept = asyncio.create_task(committer.submit(["kept"]))
    await asyncio.sleep(0)
    gone.cancel()
    commit.gate.set()
    assert await first == ["id-a"]
    assert await kept == ["id-kept"]
    assert commit.calls == [["a"], ["kept"]]


async def test_stopping_loop_never_acknowledges() -> None:
    """The committer task cancelled (the loop stops) mid-commit: the waiter in flight is
    cancelled (no id: it may or may not be stored), the queued ones get StorageError."""
    commit = _GatedCommit()
    committer: GroupCommitter[str] = GroupCommitter(commit)
    in_flight = asyncio.create_task(committer.submit(["a"]))
    await commit.started.wait()
    queued = asyncio.create_task(committer.submit(["b"]))
    await asyncio.sleep(0)
    task = committer._task
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(asyncio.CancelledError):
        await in_flight
    with pytest.raises(StorageError):
        await queued
    # The next submission starts a new committer task.
    commit.gate.set()
    assert await committer.submit(["c"]) == ["id-c"]


async def test_lone_submission_is_not_delayed(store: Database) -> None:
    """With no company a submission is committed at once (linger 0)."""
    injector = Injector(queue_store(store), SETTINGS)
    message = injector.prepare_fields(from_="i@example.jp", to=["a@example.com"], text="x")
    started = time.monotonic()
    await injector.submit(message)
    assert injector.committer.commits == 1
    assert time.monotonic() - started < 5
