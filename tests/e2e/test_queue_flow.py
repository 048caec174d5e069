"""The whole path in one process: injection → queue → worker → agent → receipts and DSNs.

Time is an injected clock: retries fall due by moving it, never by sleeping.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest

from kakitome.config import Settings
from kakitome.delivery.agent import DeliveryAgent
from kakitome.delivery.pool import ConnectionPool
from kakitome.dns.resolver import Resolver
from kakitome.injection import Injector
from kakitome.queue.scheduler import Worker
from kakitome.store.database import Database
from kakitome.testing import Fault, LocalInternet, Peer, PeerBehaviour
from tests.fixtures_db import queue_store

from ..fixtures_world import MakeDomain


@dataclass
class Clock:
    now: float = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Flow:
    settings: Settings
    store: Database
    injector: Injector
    worker: Worker
    clock: Clock
    pool: ConnectionPool
    sent: list[str] = field(default_factory=list)

    async def send(self, sender: str, to: str, **fields: object) -> str:
        message_id = await self.injector.submit_fields(
            from_=sender,
            to=[to],
            subject=str(fields.get("subject", "hello")),
            text=str(fields.get("text", "body\n")),
        )
        self.sent.append(message_id)
        return message_id

    async def status(self, message_id: str) -> tuple[str, int]:
        receipt = await queue_store(self.store).receipt(message_id)
        row = receipt.recipients[0]
        return row.status, row.attempts


@pytest.fixture
async def flow(world: LocalInternet, store: Database) -> AsyncIterator[Flow]:
    """A worker on the test store, delivering into the world, driven by a fake clock."""
    settings = world.settings(
        {
            "KAKITOME_DELIVERY__HELO_HOSTNAME": "out.kakitome.test",
            "KAKITOME_QUEUE__RETRY_FIRST": "300",
        }
    )
    clock = Clock()
    pool = ConnectionPool(settings)
    agent = DeliveryAgent(settings, Resolver(settings), pool)
    injector = Injector(queue_store(store), settings, clock=clock)
    worker = Worker(settings, queue_store(store), agent.deliver, injector=injector, clock=clock)
    yield Flow(settings, store, injector, worker, clock, pool)
    await pool.aclose()


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _only(peer: Peer, predicate: Callable[[bytes], bool] = lambda _: True) -> list[bytes]:
    return [m.data for m in peer.messages() if predicate(m.data)]


async def test_4xx_is_retried_and_delivered_once(flow: Flow, make_domain: MakeDomain) -> None:
    """A 451 at RCPT defers; when the retry falls due the message is delivered exactly once."""
    domain, peer = make_domain(PeerBehaviour(rcpt_fault=Fault("451 4.3.0 greylisted", times=1)))
    message_id = await flow.send("news@sender.test", f"user@{domain.name}")
    assert await flow.worker.run_once() == 1
    status, attempts = await flow.status(message_id)
    assert (status, attempts) == ("deferred", 1)
    receipt = await queue_store(flow.store).receipt(message_id)
    assert receipt.recipients[0].reply == {"code": 451, "enhanced": "4.3.0", "text": "greylisted"}
    # Not due yet: nothing happens.
    flow.clock.advance(200)
    assert await flow.worker.run_once() == 0
    # Due after the first back-off step (300 s).
    flow.clock.advance(101)
    assert await flow.worker.run_once() == 1
    assert await flow.status(message_id) == ("delivered", 2)
    assert len(peer.messages()) == 1


async def test_drop_in_data_is_retried_and_delivered_once(
    flow: Flow, make_domain: MakeDomain
) -> None:
    """A connection dropped in mid-DATA defers; the retry delivers it once (T10 path intact)."""
    domain, peer = make_domain(PeerBehaviour(drop_in_data=1))
    message_id = await flow.send("news@sender.test", f"user@{domain.name}")
    await flow.worker.run_once()
    status, _ = await flow.status(message_id)
    assert status == "deferred"
    assert peer.messages() == []
    flow.clock.advance(301)
    await flow.worker.run_once()
    assert (await flow.status(message_id))[0] == "delivered"
    assert len(peer.messages()) == 1


async def test_5xx_bounces_with_an_rfc3464_dsn(flow: Flow, make_domain: MakeDomain) -> None:
    """T37: a 550 bounces at once and the sender gets a multipart/report DSN from <>."""
    sender_domain, sender_peer = make_domain(prefix="sender")
    domain, _ = make_domain(PeerBehaviour(rcpt_fault=Fault("550 5.1.1 no such user")))
    recipient = f"ghost@{domain.name}"
    message_id = await flow.send(f"news@{sender_domain.name}", recipient, subject="お知らせ")
    await flow.worker.run_once()
    assert (await flow.status(message_id))[0] == "bounced"
    # The DSN was queued as its own message; the next round delivers it.
    await flow.worker.run_once()
    dsns = sender_peer.messages()
    assert len(dsns) == 1
    assert dsns[0].mail_from == ""  # never a bounce to a bounce
    assert dsns[0].rcpt_tos == (f"news@{sender_domain.name}",)
    report = _parse(dsns[0].data)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts = list(report.iter_parts())
    assert [p.get_content_type() for p in parts][:2] == ["text/plain", "message/delivery-status"]
    status_text = parts[1].as_string()
    assert f"Final-Recipient: rfc822; {recipient}" in status_text
    assert "Action: failed" in status_text
    assert "Status: 5.1.1" in status_text
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user" in status_text
    assert f"Remote-MTA: dns; mx1.{domain.name}" in status_text
    assert "Reporting-MTA: dns; out.kakitome.test" in status_text
    # The original travels back with the report.
    assert parts[2].get_content_type() in ("message/rfc822", "text/rfc822-headers")


async def test_a_bounce_of_a_dsn_makes_no_dsn(flow: Flow, make_domain: MakeDomain) -> None:
    """A DSN that bounces in turn is dropped: nothing is ever sent to the null sender."""
    sender_domain, sender_peer = make_domain(
        PeerBehaviour(rcpt_fault=Fault("550 5.1.1 sender gone")), prefix="gone"
    )
    domain, _ = make_domain(PeerBehaviour(rcpt_fault=Fault("550 5.1.1 no such user")))
    await flow.send(f"news@{sender_domain.name}", f"ghost@{domain.name}")
    await flow.worker.run_once()  # bounce → DSN queued
    await flow.worker.run_once()  # DSN bounces too
    assert await flow.worker.run_once() == 0  # and nothing more is queued
    assert sender_peer.messages() == []
    counts = await queue_store(flow.store).status_counts()
    assert counts.get("bounced") == 2


async def test_expiry_bounces_after_the_queue_lifetime(
    world: LocalInternet, store: Database, make_domain: MakeDomain
) -> None:
    """A recipient that keeps deferring bounces when its lifetime is over, saying why."""
    settings = world.settings(
        {"KAKITOME_QUEUE__RETRY_FIRST": "60", "KAKITOME_QUEUE__LIFETIME": "100"}
    )
    clock = Clock()
    pool = ConnectionPool(settings)
    agent = DeliveryAgent(settings, Resolver(settings), pool)
    injector = Injector(queue_store(store), settings, clock=clock)
    worker = Worker(settings, queue_store(store), agent.deliver, injector=injector, clock=clock)
    domain, _ = make_domain(PeerBehaviour(rcpt_fault=Fault("452 4.2.2 mailbox full")))
    message_id = await injector.submit_fields(
        from_="news@sender.test", to=[f"full@{domain.name}"], subject="s", text="t"
    )
    try:
        await worker.run_once()
        assert (await queue_store(store).receipt(message_id)).recipients[0].status == "deferred"
        clock.advance(61)
        await worker.run_once()
        row = (await queue_store(store).receipt(message_id)).recipients[0]
        assert row.status == "bounced"
        assert row.reply is not None and "lifetime" in str(row.reply["text"])
    finally:
        await pool.aclose()


async def test_null_mx_bounces_at_once(flow: Flow, world: LocalInternet) -> None:
    """T36: a domain with a null MX bounces with 556 5.1.10 on the first attempt."""
    name = world.unique_domain("nullmx")
    world.add_domain(name, null_mx=True)
    message_id = await flow.send("news@sender.test", f"user@{name}")
    await flow.worker.run_once()
    row = (await queue_store(flow.store).receipt(message_id)).recipients[0]
    assert row.status == "bounced" and row.attempts == 1
    assert row.reply is not None and (row.reply["code"], row.reply["enhanced"]) == (556, "5.1.10")


async def test_delivery_over_ipv6(flow: Flow, world: LocalInternet) -> None:
    """An MX with only an AAAA record is reached over IPv6, with TLS verified."""
    peer = world.add_peer("::1")
    name = world.unique_domain("v6")
    world.add_domain(name, mx=[(10, peer)])
    try:
        message_id = await flow.send("news@sender.test", f"user@{name}")
        await flow.worker.run_once()
        row = (await queue_store(flow.store).receipt(message_id)).recipients[0]
        assert row.status == "delivered", row.reply
        assert row.mx is not None and row.mx["ip"] == "::1"
        assert row.tls is not None and row.tls["verification"] == "verified"
        assert [m.rcpt_tos for m in peer.messages()] == [(f"user@{name}",)]
    finally:
        world.remove_domain(name)
        world.remove_peer(peer)


async def test_suppressed_recipients_bounce_at_delivery_one_lookup_a_round(
    flow: Flow, make_domain: MakeDomain
) -> None:
    """An address suppressed after its message was queued bounces at delivery time (the
    others of the same message are delivered); the worker asks the suppression list once
    per claim round, however many destinations the round holds."""
    from kakitome.inbound.store import InboundStore
    from kakitome.suppression import SUPPRESSED_REPLY

    inbound = InboundStore(flow.store.engine)
    asked: list[list[str]] = []

    async def suppressed(addresses: Sequence[str]) -> set[str]:
        asked.append(list(addresses))
        return await inbound.suppressed_among(addresses)

    worker = Worker(flow.settings, queue_store(flow.store), flow.worker._deliver, clock=flow.clock,
                    injector=flow.injector, suppressed=suppressed)  # fmt: skip
    domains = [make_domain() for _ in range(4)]
    sent = [
        await flow.injector.submit_fields(
            from_="news@sender.test",
            to=[f"keep@{d.name}", f"Gone@{d.name}"],
            subject="件名",
            text="本文",
        )
        for d, _ in domains
    ]
    gone = f"gone@{domains[2][0].name}"
    assert await inbound.add_suppression(gone, reason="manual", now=flow.clock())
    assert await worker.run_once() == 8
    assert len(asked) == 1 and len(asked[0]) == 8
    receipt = await queue_store(flow.store).receipt(sent[2])
    by_address = {r.recipient.lower(): r for r in receipt.recipients}
    assert by_address[gone].status == "bounced"
    assert by_address[gone].reply is not None
    assert by_address[gone].reply["code"] == SUPPRESSED_REPLY.code
    assert by_address[f"keep@{domains[2][0].name}"].status == "delivered"
    for message_id in (sent[0], sent[1], sent[3]):
        statuses = {
            r.status for r in (await queue_store(flow.store).receipt(message_id)).recipients
        }
        assert statuses == {"delivered"}
    # The peer of the suppressed address got only the other recipient.
    rcpts = [r for m in domains[2][1].messages() for r in m.rcpt_tos]
    assert rcpts == [f"keep@{domains[2][0].name}"]
