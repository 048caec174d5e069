"""The suppression list: addresses delivery must not send to, and when an address gets there.

An address is suppressed by one permanent failure reported back (a 5.x.x DSN), by
``inbound.temporary_bounce_threshold`` (3) temporary ones, by a complaint (ARF), or by hand
(``kakitome suppression add``). Delivery obeys the list at the moment of delivery, not at
injection: the worker asks for the suppressed recipients of every chunk it is about to hand
to the agent and records a bounce for them instead (``split_suppressed``), so an address
suppressed while its mail waits in the queue is not sent to either.

Addresses are compared by ``suppression_key``: the whole address in lower case with the
domain in A-labels. Local parts are case-sensitive in theory and nowhere in practice; a
list that errs on the side of not sending is the right way to err.

Talks to: nothing by itself; the storage is ``kakitome.inbound.store``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kakitome.addresses import parse_address
from kakitome.config import InboundSettings
from kakitome.delivery.types import Batch, OutboundMessage, Outcome, RecipientResult
from kakitome.errors import AddressError
from kakitome.smtp.replies import Reply

__all__ = [
    "REASONS",
    "SUPPRESSED_REPLY",
    "Thresholds",
    "is_permanent_status",
    "split_suppressed",
    "suppression_key",
]

REASONS = ("bounce", "complaint", "manual")

# What a suppressed recipient's delivery records (and its DSN says).
SUPPRESSED_REPLY = Reply(550, "5.7.1", "recipient address is suppressed; not sent")


def suppression_key(address: str) -> str:
    """``Local@Example.COM`` → ``local@example.com`` (A-label domain); unparseable input is
    only stripped of ``<>`` and lower-cased, so it can still be found and removed."""
    text = address.strip().strip("<>").strip()
    try:
        return parse_address(text).address.lower()
    except AddressError:
        return text.lower()


def is_permanent_status(status: str | None, code: int | None = None) -> bool:
    """A failure that suppresses at once: enhanced status 5.x.x (or a 5xx reply without
    one), except 5.2.2 "mailbox full", which counts as temporary (mailboxes empty)."""
    if status:
        return status.startswith("5.") and status != "5.2.2"
    return code is not None and code >= 500


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Failures that suppress an address: ``permanent`` 5.x.x, or ``temporary`` others."""

    permanent: int = 1
    temporary: int = 3

    @classmethod
    def from_settings(cls, settings: InboundSettings) -> Thresholds:
        return cls(settings.permanent_bounce_threshold, settings.temporary_bounce_threshold)

    def reached(self, permanent: int, temporary: int) -> bool:
        return permanent >= self.permanent or temporary >= self.temporary


def recipients_of(batch: Batch) -> list[str]:
    """Every recipient address of a batch, in order."""
    return [r.address for m in batch.messages for r in m.recipients]


def split_suppressed(
    batch: Batch, suppressed: Iterable[str]
) -> tuple[Batch | None, list[RecipientResult]]:
    """The batch without suppressed recipients (None when nobody is left) and a bounced
    result (``SUPPRESSED_REPLY``) for each recipient taken out. ``suppressed`` holds
    ``suppression_key`` values."""
    keys = set(suppressed)
    if not keys:
        return batch, []
    results: list[RecipientResult] = []
    kept: list[OutboundMessage] = []
    for message in batch.messages:
        remaining = []
        for rcpt in message.recipients:
            if suppression_key(rcpt.address) in keys:
                results.append(RecipientResult(rcpt.delivery_id, Outcome.BOUNCED, SUPPRESSED_REPLY))
            else:
                remaining.append(rcpt)
        if len(remaining) == len(message.recipients):
            kept.append(message)
        elif remaining:
            kept.append(
                OutboundMessage(
                    message_id=message.message_id,
                    sender=message.sender,
                    recipients=tuple(remaining),
                    content=message.content,
                    eight_bit=message.eight_bit,
                    smtputf8=message.smtputf8,
                    requiretls=message.requiretls,
                    envid=message.envid,
                    ret=message.ret,
                )
            )
    return (Batch(batch.domain, tuple(kept)) if kept else None), results
