"""Builders shared by the storage tests."""

from __future__ import annotations

from kakitome.delivery.types import MXUsed, Outcome, RecipientResult
from kakitome.queue.types import NewMessage, NewRecipient
from kakitome.smtp.replies import Reply
from kakitome.tls.policy import PolicySource, TLSLevel
from kakitome.tls.receipt import PeerVerification, TLSReceipt

NOW = 1_700_000_000.0
LIFETIME = 5 * 86_400.0


def message(
    *addresses: str, subject: str = "hello", sender: str = "news@sender.example"
) -> NewMessage:
    recipients = tuple(NewRecipient(a, a.rpartition("@")[2].lower()) for a in addresses)
    content = f"From: {sender}\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()
    return NewMessage(
        source="api",
        sender=sender,
        header_from=sender,
        subject=subject,
        content=content,
        recipients=recipients,
        envid="env-1",
        ret="HDRS",
    )


def tls_receipt() -> TLSReceipt:
    return TLSReceipt(
        used=True,
        version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        verification=PeerVerification.VERIFIED,
        level=TLSLevel.VERIFY,
        policy_source=PolicySource.TABLE,
        peer_certificate_sha256="ab" * 32,
    )


def result(delivery_id: int, outcome: Outcome, code: int | None = None) -> RecipientResult:
    reply = {
        Outcome.DELIVERED: Reply(250, "2.0.0", "ok queued as 123"),
        Outcome.DEFERRED: Reply(451, "4.3.0", "try again later"),
        Outcome.BOUNCED: Reply(550, "5.1.1", "no such user"),
    }[outcome]
    if code is not None:
        reply = Reply(code, reply.enhanced, reply.text)
    return RecipientResult(
        delivery_id=delivery_id,
        outcome=outcome,
        reply=reply,
        mx=MXUsed("mx.dest.example", "127.0.0.2"),
        tls=tls_receipt(),
    )
