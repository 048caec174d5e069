"""Campaign and step-mail batches wake the worker of the same process at once
(``Database.wait_for_work``) instead of leaving the mail for its next poll."""

from __future__ import annotations

import asyncio

from kakitome.campaigns.store import NewStep

from .conftest import Kit, add_people, make_list


async def _waiter(kit: Kit) -> asyncio.Task[None]:
    await kit.store.wait_for_work(0)  # forget earlier wake-ups (the imports)
    task = asyncio.create_task(kit.store.wait_for_work(600))
    await asyncio.sleep(0)
    assert not task.done()
    return task


async def test_a_campaign_batch_wakes_the_worker(kit: Kit) -> None:
    await make_list(kit.lists)
    await add_people(kit.lists, "news", [("a@example.net", "A"), ("b@example.net", "B")])
    row = await kit.campaigns.create("c", "news", subject="件名", body="<p>{{ name }}</p>")
    await kit.campaigns.send_now(row.id)
    waiter = await _waiter(kit)
    assert (await kit.campaigns.run_due()).queued == 2
    await asyncio.wait_for(waiter, 10)  # woken, not the 600 s timeout


async def test_a_step_mail_batch_wakes_the_worker(kit: Kit) -> None:
    await make_list(kit.lists)
    sequence = await kit.campaigns.create_sequence("welcome", "news")
    await kit.campaigns.add_step(sequence.id, NewStep(delay_days=0, subject="s", body="<p>x</p>"))
    kit.clock.advance(10)
    await add_people(kit.lists, "news", [("a@example.net", "A")])
    waiter = await _waiter(kit)
    assert await kit.campaigns.run_sequences() == 1
    await asyncio.wait_for(waiter, 10)


async def test_nothing_queued_wakes_nobody(kit: Kit) -> None:
    await make_list(kit.lists)
    waiter = await _waiter(kit)
    assert await kit.campaigns.run_sequences() == 0
    await asyncio.sleep(0.05)
    assert not waiter.done()
    waiter.cancel()
