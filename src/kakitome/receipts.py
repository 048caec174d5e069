"""The receipt as JSON: one conversion shared by the HTTP API and ``kakitome receipt``.

Shape (times are ISO 8601 in UTC)::

    {"id", "created_at", "from", "sender", "subject", "size",
     "recipients": [{"address", "status", "attempts", "mx": {"host", "ip"} | null,
                     "reply": {"code", "enhanced", "text"} | null,
                     "tls": {TLSReceipt.to_dict()} | null, "updated_at"}]}
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kakitome.queue.types import DeliveryRow, MessageReceipt
from kakitome.tls.receipt import TLSReceipt

FINAL_STATUSES = frozenset({"delivered", "bounced"})
# What `send --wait` waits for: every recipient has had an answer (deferred counts).
SETTLED_STATUSES = frozenset({"delivered", "bounced", "deferred"})


def iso_utc(timestamp: float | None) -> str | None:
    """``2026-01-31T09:00:00Z`` (seconds precision), or None."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def receipt_to_dict(receipt: MessageReceipt) -> dict[str, Any]:
    """The JSON-ready receipt of one message."""
    return {
        "id": receipt.id,
        "created_at": iso_utc(receipt.created_at),
        "from": receipt.header_from,
        "sender": receipt.sender,
        "subject": receipt.subject,
        "size": receipt.size,
        "recipients": [delivery_to_dict(row) for row in receipt.recipients],
    }


def delivery_to_dict(row: DeliveryRow) -> dict[str, Any]:
    """One recipient's state, as in the receipt."""
    return {
        "address": row.recipient,
        "status": row.status,
        "attempts": row.attempts,
        "mx": _mx(row.mx),
        "reply": _reply(row.reply),
        "tls": _tls(row.tls),
        "updated_at": iso_utc(row.updated_at),
    }


def queue_row_to_dict(row: DeliveryRow) -> dict[str, Any]:
    """A delivery as listed by ``queue list``: the receipt fields plus queue fields."""
    data = delivery_to_dict(row)
    data.update(
        delivery_id=row.id,
        message_id=row.message_id,
        domain=row.domain,
        next_attempt_at=iso_utc(row.next_attempt_at),
    )
    return data


def is_settled(receipt: MessageReceipt) -> bool:
    return all(row.status in SETTLED_STATUSES for row in receipt.recipients)


def _mx(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if not value:
        return None
    return {"host": value.get("host"), "ip": value.get("ip")}


def _reply(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if not value:
        return None
    return {"code": value.get("code"), "enhanced": value.get("enhanced"), "text": value.get("text")}


def _tls(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        # Round-trip through the value object so every receipt has the same keys
        # (including the derived "verified").
        return TLSReceipt.from_dict(value).to_dict()
    except (KeyError, ValueError, TypeError):
        return dict(value)
