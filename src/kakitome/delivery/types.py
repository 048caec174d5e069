"""What the scheduler hands a delivery agent and what the agent hands back.

A batch is one destination domain and one or more messages; each message carries the
recipients of that message at that domain. The agent makes one attempt per recipient and
returns one result each: it never decides when to try again (that is the queue's job).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kakitome.smtp.replies import Reply
from kakitome.tls.receipt import TLSReceipt


class Outcome(StrEnum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"  # 4xx, network, DNS or TLS-policy failure: try again
    BOUNCED = "bounced"  # 5xx, null MX, nonexistent domain: give up


@dataclass(frozen=True, slots=True)
class Recipient:
    delivery_id: int
    address: str
    # RFC 3461 NOTIFY / ORCPT as given at injection, passed on when the server has DSN.
    notify: str | None = None
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    message_id: str
    sender: str  # envelope sender; "" is the null sender (<>)
    recipients: tuple[Recipient, ...]
    # The signed message, CRLF line endings, not dot-stuffed (the session stuffs).
    content: bytes
    # True when the content has 8-bit bytes (needs 8BITMIME) or UTF-8 addresses (SMTPUTF8).
    eight_bit: bool = False
    smtputf8: bool = False
    requiretls: bool = False
    envid: str | None = None
    ret: str | None = None  # FULL or HDRS


@dataclass(frozen=True, slots=True)
class Batch:
    domain: str
    messages: tuple[OutboundMessage, ...]


@dataclass(frozen=True, slots=True)
class MXUsed:
    host: str
    ip: str


@dataclass(frozen=True, slots=True)
class RecipientResult:
    delivery_id: int
    outcome: Outcome
    reply: Reply
    mx: MXUsed | None = None
    tls: TLSReceipt | None = None
