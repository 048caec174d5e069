"""The storage service: every read and write of messages, deliveries, events and API keys.

Callers (injection, the worker, web, CLI) use this class, never the tables. Each public
method is one transaction. Works on SQLite (WAL) and PostgreSQL with the same code;
claiming uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL.

STUB: signatures agreed between helpers; the store helper implements them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kakitome.delivery.types import OutboundMessage, RecipientResult


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


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]


class Store:
    """STUB — the store helper replaces every body. Signatures are the contract."""

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 10, migrate: bool = True) -> Store:
        """Connect (sqlite:///path or postgresql://...), set SQLite WAL pragmas, and run
        Alembic migrations to head when ``migrate``. Creates the SQLite file's folder."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def inject(self, message: NewMessage, *, now: float, lifetime: float) -> str:
        """Store one message and a queued delivery per recipient in one transaction;
        return its id only after the commit. Raises StorageError when it cannot commit."""
        raise NotImplementedError

    async def inject_many(
        self, messages: Sequence[NewMessage], *, now: float, lifetime: float
    ) -> list[str]:
        """As inject, for many messages in one transaction (a group commit)."""
        raise NotImplementedError

    async def claim_due(
        self, owner: str, *, now: float, limit: int, lease_seconds: float
    ) -> list[ClaimedBatch]:
        """Lease up to ``limit`` due deliveries (status queued/deferred, next_attempt_at <=
        now, lease free or expired) and return them grouped by domain, each message once
        per domain with its recipients there, content loaded."""
        raise NotImplementedError

    async def record_results(
        self,
        owner: str,
        results: Sequence[RecipientResult],
        *,
        now: float,
        schedule: Any,
    ) -> list[Bounce]:
        """Apply attempt results: delivered/bounced are final; deferred gets
        next_attempt_at from ``schedule.next_attempt(attempts, now)`` or becomes bounced
        when that passes expires_at. Store reply, MX, TLS receipt; add an event per result;
        clear the lease. Returns the deliveries that became bounced."""
        raise NotImplementedError

    async def release_leases(self, owner: str | None = None) -> int:
        """Free leases (of one owner, or all). Returns how many."""
        raise NotImplementedError

    async def receipt(self, message_id: str) -> MessageReceipt:
        """The message and each recipient's state. Raises NotFound."""
        raise NotImplementedError

    async def list_deliveries(
        self,
        *,
        status: str | None = None,
        domain: str | None = None,
        message_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[DeliveryRow]:
        raise NotImplementedError

    async def queue_action(
        self,
        action: str,
        *,
        now: float,
        message_ids: Sequence[str] | None = None,
        domain: str | None = None,
        status: str | None = None,
    ) -> int:
        """retry | hold | release | delete on the matching non-final deliveries
        (delete removes the deliveries, and messages left without any). Returns count."""
        raise NotImplementedError

    async def set_dsn_sent(self, delivery_ids: Sequence[int], dsn_message_id: str) -> None:
        raise NotImplementedError

    async def add_event(
        self,
        kind: str,
        *,
        now: float,
        message_id: str | None = None,
        delivery_id: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        raise NotImplementedError

    async def events_for(self, message_id: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def status_counts(self) -> dict[str, int]:
        raise NotImplementedError

    async def create_api_key(self, name: str, scopes: Sequence[str], *, now: float) -> str:
        """Create a key and return it whole (shown once; only its hash is kept)."""
        raise NotImplementedError

    async def check_api_key(self, key: str, *, now: float) -> ApiKeyInfo | None:
        raise NotImplementedError
