"""Test helper: record what the agent records for a delivery that went in plaintext
(a real ``TLSReceipt`` with its ``plaintext_reason``), for the pages and commands that
show receipts."""

from __future__ import annotations

import time

from kakitome.delivery.types import MXUsed, Outcome, RecipientResult
from kakitome.queue.schedule import RetrySchedule
from kakitome.smtp.replies import Reply
from kakitome.store.database import Database
from kakitome.tls.policy import PolicySource, TLSLevel
from kakitome.tls.receipt import PeerVerification, TLSReceipt
from tests.fixtures_db import queue_store

PLAINTEXT_REASON = (
    "level may from the default: no history of TLS for mx.example.net, and no DANE, "
    "MTA-STS enforce or REQUIRETLS"
)


async def deliver_due_in_plaintext(
    store: Database, reason: str = PLAINTEXT_REASON, stripping: str | None = None
) -> None:
    """Every due delivery: delivered without TLS, the receipt naming ``reason`` (and
    ``stripping``, as with ``stripping.defer`` off)."""
    receipt = TLSReceipt(
        used=False,
        version=None,
        cipher=None,
        verification=PeerVerification.NONE,
        level=TLSLevel.MAY,
        policy_source=PolicySource.DEFAULT,
        peer_certificate_sha256=None,
        plaintext_reason=reason,
        stripping_suspected=stripping,
    )
    results = [
        RecipientResult(
            r.delivery_id,
            Outcome.DELIVERED,
            Reply(250, "2.0.0", "ok"),
            MXUsed("mx.example.net", "192.0.2.1"),
            receipt,
        )
        for batch in await queue_store(store).claim_due(
            "w", now=time.time() + 1, limit=10, lease_seconds=60
        )
        for m in batch.messages
        for r in m.recipients
    ]
    await queue_store(store).record_results("w", results, now=time.time(), schedule=RetrySchedule())
