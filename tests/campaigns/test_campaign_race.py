"""Campaign batches shared by two workers: two runners (two ``CampaignService``s, each on
its own connection pool, as two worker processes would be) racing on the same PostgreSQL
never send the same subscriber twice (checkpoint compare-and-set + ``campaign_sends``
primary key)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import func, select

from kakitome.campaigns.service import CampaignService
from kakitome.campaigns.tracking import LinkSigner
from kakitome.injection import Injector
from kakitome.lists import ListService, TokenSigner
from kakitome.store.database import Database
from kakitome.store.schema import deliveries
from kakitome.store.schema_campaigns import campaign_sends
from tests.fixtures_db import queue_store

from .conftest import LINK_KEY, Kit, add_people, make_list

PEOPLE = 500
CAMPAIGNS = 3


async def _second_runner(kit: Kit, url: str) -> tuple[Database, CampaignService]:
    store = await Database.open(url, pool_size=4)
    injector = Injector(queue_store(store), kit.settings, clock=kit.clock)
    lists = ListService(
        store, kit.settings, injector=injector, clock=kit.clock,
        signer=TokenSigner(b"0123456789abcdef0123456789abcdef"),
    )  # fmt: skip
    service = CampaignService(
        store, kit.settings, lists, injector, clock=kit.clock,
        signer=LinkSigner(LINK_KEY, "https://news.example.jp"),
    )  # fmt: skip
    return store, service


async def test_two_runners_never_send_a_subscriber_twice(kit: Kit, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("two runners share batches on PostgreSQL (SQLite: one worker process)")
    await make_list(kit.lists)
    await add_people(kit.lists, "news", [(f"user{i}@example.net", "") for i in range(PEOPLE)])
    ids = []
    for n in range(CAMPAIGNS):
        row = await kit.campaigns.create(f"c{n}", "news", subject="件名", body="<p>x</p>")
        await kit.campaigns.send_now(row.id)
        ids.append(row.id)
    store_b, runner_b = await _second_runner(kit, database_url)
    runners = [kit.campaigns, runner_b]
    try:
        queued = [0, 0]
        for _ in range(200):
            # Both runners at once, one batch at a time, so they meet on every batch.
            reports = await asyncio.gather(*(r.run_due(max_batches=1) for r in runners))
            for i, report in enumerate(reports):
                queued[i] += report.queued
            statuses = [(await kit.campaigns.get(c)).status for c in ids]
            if all(status == "finished" for status in statuses):
                break
        else:
            pytest.fail(f"campaigns not finished; queued {queued}")
    finally:
        await store_b.close()
    async with kit.store.engine.connect() as conn:
        recipients = Counter(str(r[0]) for r in await conn.execute(select(deliveries.c.recipient)))
        sends = await conn.execute(
            select(campaign_sends.c.campaign_id, func.count()).group_by(
                campaign_sends.c.campaign_id
            )
        )
        per_campaign = {int(c): int(n) for c, n in sends}
    print(f"\n[campaign-race] runner A queued {queued[0]}, runner B {queued[1]}")
    assert sum(queued) == PEOPLE * CAMPAIGNS
    assert min(queued) > 0, "one runner did everything: the race was not exercised"
    assert per_campaign == dict.fromkeys(ids, PEOPLE)
    # One message per subscriber per campaign: never the same subscriber twice.
    assert set(recipients.values()) == {CAMPAIGNS}
    assert len(recipients) == PEOPLE
