"""The queue's vocabulary: what is injected, claimed, reported and listed, and the states.

A message (``messages``) has one delivery per recipient (``deliveries``), the unit the
queue schedules. A delivery is ``queued`` (never tried), ``deferred`` (tried, due again at
``next_attempt_at``), ``held`` (an operator stopped it), or final: ``delivered`` or
``bounced``. ``kakitome.queue.transitions`` decides the state after an attempt;
``kakitome.queue.store`` keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kakitome.delivery.types import OutboundMessage

__all__ = [
    "BOUNCED",
    "DEFERRED",
    "DELIVERED",
    "EXPIRED_ENHANCED",
    "HELD",
    "PENDING",
    "QUEUED",
    "QUEUE_ACTIONS",
    "STATUSES",
    "Bounce",
    "ClaimedBatch",
    "DeliveryRow",
    "MessageReceipt",
    "NewMessage",
    "NewRecipient",
]

QUEUED = "queued"
DEFERRED = "deferred"
DELIVERED = "delivered"
BOUNCED = "bounced"
HELD = "held"
STATUSES = (QUEUED, DEFERRED, DELIVERED, BOUNCED, HELD)
PENDING = (QUEUED, DEFERRED, HELD)  # not final: queue actions apply to these

QUEUE_ACTIONS = {"retry": "retried", "hold": "held", "release": "released", "delete": "deleted"}

# Enhanced status for "delivery time expired" (RFC 3463 X.4.7).
EXPIRED_ENHANCED = "4.4.7"


@dataclass(frozen=True, slots=True)
class NewRecipient:
    address: str
    domain: str  # lower-case ASCII (IDNA) domain of the address
    notify: str | None = None
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class NewMessage:
    source: str  # api | cli | smtp | campaign | dsn
    sender: str  # envelope sender, "" for <>
    header_from: str
    subject: str
    content: bytes  # CRLF, final (signed), not dot-stuffed
    recipients: tuple[NewRecipient, ...]
    eight_bit: bool = False
    smtputf8: bool = False
    requiretls: bool = False
    envid: str | None = None
    ret: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    """Due deliveries for one destination domain, leased to one worker."""

    domain: str
    messages: tuple[OutboundMessage, ...]


@dataclass(frozen=True, slots=True)
class Bounce:
    """A delivery that became bounced in record_results and may need a DSN."""

    delivery_id: int
    message_id: str
    recipient: str
    sender: str
    reply_code: int
    reply_enhanced: str | None
    reply_text: str
    mx_host: str | None
    notify: str | None
    orcpt: str | None
    envid: str | None
    ret: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    message_id: str
    recipient: str
    domain: str
    status: str
    attempts: int
    next_attempt_at: float
    updated_at: float
    reply: dict[str, Any] | None
    mx: dict[str, Any] | None
    tls: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class MessageReceipt:
    id: str
    created_at: float
    sender: str
    header_from: str
    subject: str
    size: int
    recipients: tuple[DeliveryRow, ...] = field(default_factory=tuple)
