"""REQUIRETLS end to end (RFC 8689, T29): injection → queue → worker → agent → bounce →
redacted DSN → worker → agent → the sender's MX.

The unit test of the redacted DSN is in tests/tls/test_requiretls.py; this one drives the
real ``Worker`` on the test store (SQLite and PostgreSQL) with the local internet and an
MTA-STS policy host, as test_queue_flow.py does.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage

import pytest

from kakitome.config import Settings
from kakitome.delivery.agent import DeliveryAgent
from kakitome.delivery.pool import ConnectionPool
from kakitome.dns.resolver import Resolver
from kakitome.injection import Injector
from kakitome.queue.scheduler import Worker
from kakitome.store.database import Database
from kakitome.testing import LocalInternet, PeerBehaviour
from kakitome.testing.https import add_mta_sts_host, mta_sts_policy
from kakitome.tls.state import MemoryTLSState
from tests.fixtures_db import queue_store
from tests.fixtures_world import MakeDomain
from tests.tls.conftest import tls_env

SECRET_SUBJECT = "Quarterly numbers: do not forward"
SECRET_BODY = "The merger closes on Friday.\n"


@dataclass
class Flow:
    settings: Settings
    store: Database
    injector: Injector
    worker: Worker


@pytest.fixture
async def flow(world: LocalInternet, store: Database) -> AsyncIterator[Flow]:
    """A worker on the test store with MTA-STS pointed at the world's HTTPS server."""
    settings = tls_env(world, DELIVERY__HELO_HOSTNAME="out.kakitome.test")
    pool = ConnectionPool(settings)
    agent = DeliveryAgent(settings, Resolver(settings), pool, tls_state=MemoryTLSState())
    injector = Injector(queue_store(store), settings)
    worker = Worker(settings, queue_store(store), agent.deliver, injector=injector)
    yield Flow(settings, store, injector, worker)
    await pool.aclose()


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_requiretls_to_insecure_destination_bounces_with_redacted_dsn(
    flow: Flow, world: LocalInternet, make_domain: MakeDomain
) -> None:
    """T29: a REQUIRETLS message to a destination found without DNSSEC or MTA-STS bounces
    5.7.30 at once (nothing is sent there, though the host offers TLS and REQUIRETLS); the
    sender gets a DSN with the original's identifying headers only (no Subject, no body),
    and that DSN itself travels with REQUIRETLS, over the sender domain's MTA-STS path."""
    sender_domain, sender_peer = make_domain(PeerBehaviour(requiretls=True), prefix="sender")
    add_mta_sts_host(world, sender_domain.name, mta_sts_policy("enforce", [sender_domain.mx[0][1]]))
    domain, peer = make_domain(PeerBehaviour(requiretls=True))
    sender = f"news@{sender_domain.name}"
    recipient = f"bob@{domain.name}"
    message_id = await flow.injector.submit_fields(
        from_=sender, to=[recipient], subject=SECRET_SUBJECT, text=SECRET_BODY, requiretls=True
    )

    assert await flow.worker.run_once() == 1
    receipt = await queue_store(flow.store).receipt(message_id)
    [row] = receipt.recipients
    assert row.status == "bounced", row
    assert row.reply is not None and row.reply["enhanced"] == "5.7.30"
    assert peer.messages() == []  # not a byte of the message went to the insecure MX

    # The DSN was queued as its own message, from <>, flagged REQUIRETLS.
    assert await flow.worker.run_once() == 1
    [dsn] = sender_peer.messages()
    assert dsn.mail_from == "" and dsn.rcpt_tos == (sender,)
    assert dsn.tls, "a REQUIRETLS DSN travels only over TLS"
    assert "REQUIRETLS" in (o.upper() for o in dsn.mail_options)

    report = _parse(dsn.data)
    assert report.get_content_type() == "multipart/report"
    parts = list(report.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    status_text = parts[1].as_string()
    assert f"Final-Recipient: rfc822; {recipient}" in status_text
    assert "Status: 5.7.30" in status_text
    returned = parts[2].get_content()
    returned_text = returned if isinstance(returned, str) else bytes(returned).decode()
    assert "Message-ID:" in returned_text or "Message-Id:" in returned_text
    assert f"From: {sender}" in returned_text or sender in returned_text
    # Redacted: neither the subject nor the recipient header nor the body come back.
    assert "Subject" not in returned_text and "To:" not in returned_text
    raw = dsn.data.decode("utf-8", errors="replace")
    assert SECRET_SUBJECT not in raw
    assert SECRET_BODY.strip() not in raw
