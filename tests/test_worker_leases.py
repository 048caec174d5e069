"""The worker never hands a delivery to the agent twice, even when its lease ran out.

On a loaded machine a lease can lapse before its renewal (SQLite's lock held, the process
starved), and the worker's next claim then hands back deliveries it is still delivering,
with its own name on them. They are dropped from the claim. The hole closed here: a
delivery that was in flight when the claim read it, and finished while the claim's answer
was on its way back, was no longer in flight by the time the answer was filtered, so it
was sent a second time (seen as 22 messages sent twice in the campaign SIGKILL test).
The store is real (SQLite and PostgreSQL); the agent is a function that counts.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from kakitome.config import load_settings
from kakitome.delivery.types import Batch, Outcome, RecipientResult
from kakitome.injection import Injector
from kakitome.queue.scheduler import Progress, Worker
from kakitome.queue.types import ClaimedBatch
from kakitome.smtp.replies import Reply
from kakitome.store.database import Database
from tests.fixtures_db import queue_store
from tests.scale.helpers import message

LEASE = 1.0


async def test_delivery_finished_during_a_claim_is_not_sent_again(database_url: str) -> None:
    """The first delivery's lease lapses (no renewal); the claim that takes it back is
    answered only after that delivery has finished and committed: it is not sent again."""
    settings = load_settings(
        environ={
            "KAKITOME_DATABASE__URL": database_url,
            "KAKITOME_QUEUE__LEASE_SECONDS": str(LEASE),
            "KAKITOME_QUEUE__POLL_INTERVAL": "0.1",
            "KAKITOME_SCALE__RENEW_LEASES": "false",
        }
    )
    store = await Database.open(database_url, pool_size=5)
    queue = queue_store(store)
    sent: Counter[int] = Counter()
    release = asyncio.Event()
    worker: Worker | None = None
    trapped: list[int] = []
    claimed_again = asyncio.Event()

    async def deliver(batch: Batch, progress: Progress) -> list[RecipientResult]:
        ids = [r.delivery_id for m in batch.messages for r in m.recipients]
        sent.update(ids)
        if sum(sent.values()) == 1:
            await release.wait()  # in flight until the lapsed lease is claimed again
        return [RecipientResult(i, Outcome.DELIVERED, Reply(250, "2.0.0", "ok")) for i in ids]

    claim_due = queue.claim_due

    async def slow_answer(
        owner: str, *, now: float, limit: int, lease_seconds: float
    ) -> list[ClaimedBatch]:
        batches = await claim_due(owner, now=now, limit=limit, lease_seconds=lease_seconds)
        ids = {r.delivery_id for c in batches for m in c.messages for r in m.recipients}
        if sent and set(sent) & ids and not release.is_set():
            # The claim has committed; its answer "travels" while the delivery it took
            # back finishes, commits its result and leaves the worker's in-flight set.
            trapped.extend(ids)
            claimed_again.set()
            release.set()
            assert worker is not None
            deadline = time.monotonic() + 20
            while worker.delivered < 1 or worker._in_flight:
                assert time.monotonic() < deadline, "the first delivery did not finish"
                await asyncio.sleep(0.01)
        return batches

    queue.claim_due = slow_answer  # type: ignore[method-assign]
    stop = asyncio.Event()
    try:
        [message_id] = await queue.inject_many(
            [message(1, "d.test")], now=time.time(), lifetime=86_400
        )
        worker = Worker(settings, queue, deliver, injector=Injector(queue, settings))
        running = asyncio.create_task(worker.run(stop))
        try:
            await asyncio.wait_for(claimed_again.wait(), 30)
        except TimeoutError:
            pytest.fail("the lapsed lease was never claimed again")
        await asyncio.sleep(LEASE * 2)  # a second hand-over would have happened by now
        stop.set()
        await asyncio.wait_for(running, 30)
        assert (await queue.receipt(message_id)).recipients[0].status == "delivered"
        assert dict(sent) == {trapped[0]: 1}, f"sent again: {dict(sent)}"
    finally:
        stop.set()
        await store.close()
