"""The store's queue: inject, claim, record results, leases, queue actions, receipts."""

from __future__ import annotations

import asyncio

import pytest

from kakitome.delivery.types import Outcome
from kakitome.errors import InputError, NotFound
from kakitome.queue.schedule import RetrySchedule
from kakitome.queue.store import QueueStore
from kakitome.queue.types import ClaimedBatch
from kakitome.store import ids
from kakitome.store.database import Database
from tests.fixtures_db import queue_store
from tests.store.helpers import LIFETIME, NOW, message, result, tls_receipt

SCHEDULE = RetrySchedule(first=300.0, factor=2.0, maximum=3600.0, lifetime=LIFETIME)


def delivery_ids(batches: list[ClaimedBatch]) -> list[int]:
    return sorted(r.delivery_id for b in batches for m in b.messages for r in m.recipients)


async def test_inject_commits_and_returns_sortable_id(queue: QueueStore, database_url: str) -> None:
    """inject returns a 26-char base32 id whose message a second connection can read."""
    first = await queue.inject(message("a@one.example"), now=NOW, lifetime=LIFETIME)
    second = await queue.inject(message("b@one.example"), now=NOW + 1, lifetime=LIFETIME)
    assert ids.is_message_id(first) and ids.is_message_id(second)
    assert first < second
    other = await Database.open(database_url, migrate=False)
    try:
        receipt = await queue_store(other).receipt(first)
    finally:
        await other.close()
    assert receipt.recipients[0].recipient == "a@one.example"
    assert receipt.recipients[0].status == "queued"
    assert [e["kind"] for e in await queue.events_for(first)] == ["queued"]


async def test_inject_many_ids_in_order_and_all_queued(queue: QueueStore) -> None:
    """inject_many stores every message with one queued delivery per recipient."""
    batch = [message(f"u{i}@d{i % 3}.example", "x@other.example") for i in range(50)]
    got = await queue.inject_many(batch, now=NOW, lifetime=LIFETIME)
    assert len(set(got)) == 50 and got == sorted(got)
    assert (await queue.status_counts())["queued"] == 100


async def test_inject_without_recipients_is_refused(queue: QueueStore) -> None:
    """A message with no recipients is an input error and nothing is stored."""
    with pytest.raises(InputError):
        await queue.inject(message(), now=NOW, lifetime=LIFETIME)
    assert sum((await queue.status_counts()).values()) == 0


async def test_claim_groups_by_domain_and_message(queue: QueueStore) -> None:
    """claim_due returns one batch per domain, each message once with its recipients there."""
    m1 = await queue.inject(
        message("a@one.example", "b@one.example", "c@two.example"), now=NOW, lifetime=LIFETIME
    )
    m2 = await queue.inject(message("d@one.example"), now=NOW, lifetime=LIFETIME)
    batches = await queue.claim_due("w1", now=NOW, limit=100, lease_seconds=60)
    by_domain = {b.domain: b for b in batches}
    assert set(by_domain) == {"one.example", "two.example"}
    one = {m.message_id: m for m in by_domain["one.example"].messages}
    assert set(one) == {m1, m2}
    assert [r.address for r in one[m1].recipients] == ["a@one.example", "b@one.example"]
    assert one[m1].content.startswith(b"From: news@sender.example\r\n")
    assert one[m1].envid == "env-1" and one[m1].ret == "HDRS"
    two = by_domain["two.example"].messages
    assert [(m.message_id, [r.address for r in m.recipients]) for m in two] == [
        (m1, ["c@two.example"])
    ]
    # Everything is leased now: a second claim gets nothing.
    assert await queue.claim_due("w2", now=NOW, limit=100, lease_seconds=60) == []


async def test_claim_respects_limit_and_due_time(queue: QueueStore) -> None:
    """Only due deliveries are claimed, at most ``limit`` of them."""
    await queue.inject_many(
        [message(f"r{i}@d.example") for i in range(10)], now=NOW, lifetime=LIFETIME
    )
    await queue.inject(message("later@d.example"), now=NOW + 100, lifetime=LIFETIME)
    got = await queue.claim_due("w1", now=NOW + 1, limit=4, lease_seconds=60)
    assert len(delivery_ids(got)) == 4
    rest = await queue.claim_due("w1", now=NOW + 1, limit=100, lease_seconds=60)
    assert len(delivery_ids(rest)) == 6
    assert not set(delivery_ids(got)) & set(delivery_ids(rest))
    assert await queue.next_due_at() == NOW + 100


async def test_claim_interleaves_new_mail_and_retries(queue: QueueStore) -> None:
    """A backlog of due retries does not starve new mail: the two are taken in turn."""
    await queue.inject_many(
        [message(f"old{i}@d.example") for i in range(10)], now=NOW, lifetime=LIFETIME
    )
    first = await queue.claim_due("w1", now=NOW, limit=10, lease_seconds=60)
    await queue.record_results(
        "w1",
        [result(i, Outcome.DEFERRED) for i in delivery_ids(first)],
        now=NOW,
        schedule=SCHEDULE,
    )
    await queue.inject_many(
        [message(f"new{i}@d.example") for i in range(10)], now=NOW + 400, lifetime=LIFETIME
    )
    got = await queue.claim_due("w1", now=NOW + 1000, limit=6, lease_seconds=60)
    addresses = [r.address for b in got for m in b.messages for r in m.recipients]
    assert sum(a.startswith("old") for a in addresses) == 3
    assert sum(a.startswith("new") for a in addresses) == 3


async def test_concurrent_claimers_never_share_a_delivery(
    queue: QueueStore, database_url: str
) -> None:
    """Two stores claiming at once (SKIP LOCKED on PostgreSQL) never get the same delivery."""
    total = 600
    await queue.inject_many(
        [message(f"r{i}@d{i % 7}.example") for i in range(total)], now=NOW, lifetime=LIFETIME
    )
    second = await Database.open(database_url, migrate=False)
    seen: dict[str, list[int]] = {"a": [], "b": []}

    async def drain(name: str, s: QueueStore) -> None:
        while True:
            got = await s.claim_due(name, now=NOW, limit=25, lease_seconds=60)
            if not got:
                return
            seen[name].extend(delivery_ids(got))

    try:
        await asyncio.gather(drain("a", queue), drain("b", queue_store(second)), drain("a", queue))
    finally:
        await second.close()
    everything = seen["a"] + seen["b"]
    assert len(everything) == total
    assert len(set(everything)) == total
    if queue.database.dialect == "postgresql":
        # Both made progress in parallel (on SQLite one writer may take it all).
        assert seen["a"] and seen["b"]


async def test_expired_lease_is_reclaimable(queue: QueueStore) -> None:
    """A dead worker's lease runs out and another worker claims the delivery."""
    await queue.inject(message("a@d.example"), now=NOW, lifetime=LIFETIME)
    first = await queue.claim_due("dead", now=NOW, limit=10, lease_seconds=60)
    assert await queue.claim_due("w2", now=NOW + 59, limit=10, lease_seconds=60) == []
    again = await queue.claim_due("w2", now=NOW + 61, limit=10, lease_seconds=60)
    assert delivery_ids(again) == delivery_ids(first)
    # The dead worker's late result no longer counts; the new owner's does.
    (did,) = delivery_ids(again)
    assert (
        await queue.record_results(
            "dead", [result(did, Outcome.BOUNCED)], now=NOW + 62, schedule=SCHEDULE
        )
        == []
    )
    await queue.record_results(
        "w2", [result(did, Outcome.DELIVERED)], now=NOW + 63, schedule=SCHEDULE
    )
    (row,) = await queue.list_deliveries()
    assert row.status == "delivered"


async def test_release_leases_frees_one_owner(queue: QueueStore) -> None:
    """release_leases(owner) frees that owner's leases only, and they are due again."""
    await queue.inject_many(
        [message("a@one.example"), message("b@two.example")], now=NOW, lifetime=LIFETIME
    )
    await queue.claim_due("w1", now=NOW, limit=1, lease_seconds=60)
    await queue.claim_due("w2", now=NOW, limit=1, lease_seconds=60)
    assert await queue.release_leases("w1") == 1
    got = await queue.claim_due("w3", now=NOW, limit=10, lease_seconds=60)
    assert len(delivery_ids(got)) == 1
    assert await queue.release_leases() == 2


async def test_record_delivered_stores_reply_mx_tls(queue: QueueStore) -> None:
    """A delivered result is final and the receipt shows its reply, MX and TLS receipt."""
    mid = await queue.inject(message("a@d.example"), now=NOW, lifetime=LIFETIME)
    (did,) = delivery_ids(await queue.claim_due("w1", now=NOW, limit=10, lease_seconds=60))
    bounces = await queue.record_results(
        "w1", [result(did, Outcome.DELIVERED)], now=NOW + 5, schedule=SCHEDULE
    )
    assert bounces == []
    receipt = await queue.receipt(mid)
    assert receipt.size == len(message("a@d.example").content)
    (row,) = receipt.recipients
    assert row.status == "delivered" and row.attempts == 1 and row.updated_at == NOW + 5
    assert row.reply == {"code": 250, "enhanced": "2.0.0", "text": "ok queued as 123"}
    assert row.mx == {"host": "mx.dest.example", "ip": "127.0.0.2"}
    assert row.tls == tls_receipt().to_dict()
    kinds = [(e["kind"], e["delivery_id"]) for e in await queue.events_for(mid)]
    assert kinds == [("queued", None), ("delivered", did)]
    event = (await queue.events_for(mid))[-1]
    assert event["data"]["tls"]["verified"] is True
    assert event["data"]["mx"] == {"host": "mx.dest.example", "ip": "127.0.0.2"}
    # Delivered is final: nothing is due any more.
    assert await queue.claim_due("w1", now=NOW + 10**6, limit=10, lease_seconds=60) == []


async def test_record_deferred_schedules_retry(queue: QueueStore) -> None:
    """A deferred result follows the schedule: first retry after 300 s, then 600 s."""
    await queue.inject(message("a@d.example"), now=NOW, lifetime=LIFETIME)
    (did,) = delivery_ids(await queue.claim_due("w1", now=NOW, limit=10, lease_seconds=60))
    await queue.record_results("w1", [result(did, Outcome.DEFERRED)], now=NOW, schedule=SCHEDULE)
    (row,) = await queue.list_deliveries(status="deferred")
    assert row.next_attempt_at == NOW + 300 and row.attempts == 1
    assert await queue.next_due_at() == NOW + 300
    assert await queue.claim_due("w1", now=NOW + 299, limit=10, lease_seconds=60) == []
    again = await queue.claim_due("w1", now=NOW + 300, limit=10, lease_seconds=60)
    assert delivery_ids(again) == [did]
    await queue.record_results(
        "w1", [result(did, Outcome.DEFERRED)], now=NOW + 300, schedule=SCHEDULE
    )
    (row,) = await queue.list_deliveries()
    assert row.next_attempt_at == NOW + 900 and row.attempts == 2


async def test_record_bounced_returns_bounce_for_dsn(queue: QueueStore) -> None:
    """A bounced result is final and comes back with what a DSN needs."""
    mid = await queue.inject(message("a@d.example"), now=NOW, lifetime=LIFETIME)
    (did,) = delivery_ids(await queue.claim_due("w1", now=NOW, limit=10, lease_seconds=60))
    (bounce,) = await queue.record_results(
        "w1", [result(did, Outcome.BOUNCED)], now=NOW, schedule=SCHEDULE
    )
    assert (bounce.delivery_id, bounce.message_id, bounce.recipient) == (did, mid, "a@d.example")
    assert (bounce.reply_code, bounce.reply_enhanced) == (550, "5.1.1")
    assert (bounce.sender, bounce.envid, bounce.ret) == ("news@sender.example", "env-1", "HDRS")
    assert bounce.mx_host == "mx.dest.example"
    await queue.set_dsn_sent([did], "dsnmessage")
    assert (await queue.list_deliveries(status="bounced"))[0].id == did


async def test_deferred_past_lifetime_bounces_as_expired(queue: QueueStore) -> None:
    """A deferral whose next attempt would pass expires_at bounces with 4.4.7 and says why."""
    mid = await queue.inject(message("a@d.example"), now=NOW, lifetime=200.0)
    (did,) = delivery_ids(await queue.claim_due("w1", now=NOW, limit=10, lease_seconds=60))
    (bounce,) = await queue.record_results(
        "w1", [result(did, Outcome.DEFERRED)], now=NOW, schedule=SCHEDULE
    )
    assert bounce.reply_code == 451 and bounce.reply_enhanced == "4.4.7"
    assert bounce.reply_text == "queue lifetime expired: 451 4.3.0 try again later"
    (row,) = (await queue.receipt(mid)).recipients
    assert row.status == "bounced"
    last = (await queue.events_for(mid))[-1]
    assert last["kind"] == "bounced" and last["data"]["expired"] is True


async def test_results_for_thousands_in_one_call(queue: QueueStore) -> None:
    """record_results applies mixed outcomes for 2,000 deliveries in one call."""
    await queue.inject_many(
        [message(f"r{i}@d{i % 5}.example") for i in range(2000)], now=NOW, lifetime=LIFETIME
    )
    claimed = delivery_ids(await queue.claim_due("w1", now=NOW, limit=5000, lease_seconds=60))
    outcomes = [Outcome.DELIVERED, Outcome.DEFERRED, Outcome.BOUNCED]
    results = [result(d, outcomes[i % 3]) for i, d in enumerate(claimed)]
    bounces = await queue.record_results("w1", results, now=NOW, schedule=SCHEDULE)
    counts = await queue.status_counts()
    assert counts == {"queued": 0, "deferred": 667, "delivered": 667, "bounced": 666, "held": 0}
    assert len(bounces) == 666


async def test_queue_action_hold_and_release(queue: QueueStore) -> None:
    """hold takes deliveries out of the queue; release makes them due now."""
    m1 = await queue.inject(message("a@one.example"), now=NOW, lifetime=LIFETIME)
    await queue.inject(message("b@two.example"), now=NOW, lifetime=LIFETIME)
    assert await queue.queue_action("hold", now=NOW, domain="one.example") == 1
    got = await queue.claim_due("w1", now=NOW, limit=10, lease_seconds=60)
    assert [b.domain for b in got] == ["two.example"]
    assert await queue.queue_action("release", now=NOW + 50, message_ids=[m1]) == 1
    (row,) = await queue.list_deliveries(message_id=m1)
    assert row.status == "queued" and row.next_attempt_at == NOW + 50
    assert [e["kind"] for e in await queue.events_for(m1)] == ["queued", "held", "released"]


async def test_queue_action_retry_makes_deferred_due(queue: QueueStore) -> None:
    """retry brings a deferred delivery's next attempt forward to now."""
    await queue.inject(message("a@d.example"), now=NOW, lifetime=LIFETIME)
    (did,) = delivery_ids(await queue.claim_due("w1", now=NOW, limit=10, lease_seconds=60))
    await queue.record_results("w1", [result(did, Outcome.DEFERRED)], now=NOW, schedule=SCHEDULE)
    assert await queue.queue_action("retry", now=NOW + 10, status="deferred") == 1
    assert delivery_ids(await queue.claim_due("w1", now=NOW + 10, limit=10, lease_seconds=60)) == [
        did
    ]


async def test_queue_action_delete_removes_orphan_messages(queue: QueueStore) -> None:
    """delete removes pending deliveries, and messages left with none; final ones stay."""
    m1 = await queue.inject(message("a@one.example"), now=NOW, lifetime=LIFETIME)
    m2 = await queue.inject(message("b@one.example", "c@two.example"), now=NOW, lifetime=LIFETIME)
    batches = await queue.claim_due("w1", now=NOW, limit=10, lease_seconds=60)
    two = next(b for b in batches if b.domain == "two.example")
    (did,) = delivery_ids([two])
    await queue.record_results("w1", [result(did, Outcome.DELIVERED)], now=NOW, schedule=SCHEDULE)
    assert await queue.queue_action("delete", now=NOW, domain="one.example") == 2
    with pytest.raises(NotFound):
        await queue.receipt(m1)
    remaining = (await queue.receipt(m2)).recipients
    assert [(r.recipient, r.status) for r in remaining] == [("c@two.example", "delivered")]


async def test_queue_action_rejects_unknown_action(queue: QueueStore) -> None:
    """An unknown action is an input error."""
    with pytest.raises(InputError):
        await queue.queue_action("explode", now=NOW)


async def test_receipt_unknown_id_is_not_found(queue: QueueStore) -> None:
    """receipt of an id that names nothing raises NotFound."""
    with pytest.raises(NotFound):
        await queue.receipt("0" * 26)


async def test_wait_for_work_wakes_on_inject(queue: QueueStore) -> None:
    """A waiting worker wakes well before its timeout when mail is injected."""
    await queue.wait_for_work(0.01)  # start listening (PostgreSQL), clear any old wake-up
    loop = asyncio.get_running_loop()
    start = loop.time()
    waiter = asyncio.create_task(queue.wait_for_work(10.0))
    await asyncio.sleep(0.05)
    await queue.inject(message("a@d.example"), now=NOW, lifetime=LIFETIME)
    await asyncio.wait_for(waiter, 5.0)
    assert loop.time() - start < 3.0


async def test_wait_for_work_wakes_across_stores_on_postgres(
    queue: QueueStore, database_url: str
) -> None:
    """On PostgreSQL, NOTIFY wakes a worker of another process (another Database)."""
    if queue.database.dialect != "postgresql":
        pytest.skip("cross-process wake-up is PostgreSQL's LISTEN/NOTIFY")
    other = await Database.open(database_url, migrate=False)
    try:
        await other.wait_for_work(0.01)
        waiter = asyncio.create_task(other.wait_for_work(10.0))
        await asyncio.sleep(0.05)
        await queue.inject(message("a@d.example"), now=NOW, lifetime=LIFETIME)
        await asyncio.wait_for(waiter, 3.0)
    finally:
        await other.close()


async def test_next_due_at_empty_queue(queue: QueueStore) -> None:
    """next_due_at is None when nothing is waiting."""
    assert await queue.next_due_at() is None
