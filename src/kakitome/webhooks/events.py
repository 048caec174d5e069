"""Webhook event types, and how rows of the event sources become events.

Sources (each read in id order from its own cursor):

- ``events`` (``e<id>``): ``queued``, ``delivered``, ``deferred``, ``bounced`` (a delivery's
  result, or a bounce reported back later), ``complained`` (an ARF report), and
  ``domain_state`` (a sending domain's DNS verification changed state) as
  ``domain_dns_changed``. A ``delivered`` event whose TLS receipt says ``downgraded`` also
  gives a ``tls_downgrade`` event.
- ``tracking_events`` (``t<id>``): ``open`` and ``click`` as ``opened`` and ``clicked``.
- ``subscriber_events`` (``s<id>``): ``unsubscribed``.

The JSON body of every event::

    {"id": "evt_e42", "type": "delivered", "created_at": "2026-01-31T09:00:00Z",
     "data": {...}}

``id`` is stable: a retried POST carries the same id, so a receiver can drop duplicates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

EVENT_TYPES = (
    "queued",
    "delivered",
    "deferred",
    "bounced",
    "complained",
    "unsubscribed",
    "opened",
    "clicked",
    "tls_downgrade",
    "domain_dns_changed",
)

# events.kind -> webhook type (the rest of the kinds are internal).
EVENT_KINDS: dict[str, str] = {
    "queued": "queued",
    "delivered": "delivered",
    "deferred": "deferred",
    "bounced": "bounced",
    "complained": "complained",
    "domain_state": "domain_dns_changed",
}
TRACKING_KINDS: dict[str, str] = {"open": "opened", "click": "clicked"}
SUBSCRIBER_KINDS: dict[str, str] = {"unsubscribed": "unsubscribed"}


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    key: str  # source letter and id: "e42", "t7", "s3"; plus "-tls" for the derived event
    type: str
    at: float
    data: dict[str, Any]

    def body(self) -> str:
        """The JSON body, compact, keys in a fixed order."""
        document = {
            "id": f"evt_{self.key}",
            "type": self.type,
            "created_at": iso(self.at),
            "data": self.data,
        }
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str)


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def from_event_row(
    row_id: int,
    kind: str,
    at: float,
    message_id: str | None,
    delivery_id: int | None,
    data: Any,
    recipient: str | None,
) -> list[WebhookEvent]:
    """The webhook events of one row of ``events`` (none for internal kinds)."""
    kind_type = EVENT_KINDS.get(kind)
    if kind_type is None:
        return []
    details = dict(data) if isinstance(data, dict) else {}
    payload: dict[str, Any] = {}
    if message_id is not None:
        payload["message_id"] = message_id
    if delivery_id is not None:
        payload["delivery_id"] = delivery_id
    if recipient is not None:
        payload["recipient"] = recipient
    payload.update(details)
    out = [WebhookEvent(f"e{row_id}", kind_type, at, payload)]
    tls = details.get("tls")
    if kind == "delivered" and isinstance(tls, dict) and tls.get("downgraded"):
        out.append(WebhookEvent(f"e{row_id}-tls", "tls_downgrade", at, payload))
    return out


def from_tracking_row(
    row_id: int, kind: str, at: float, ref: str, subscriber_id: int, url: str | None
) -> list[WebhookEvent]:
    kind_type = TRACKING_KINDS.get(kind)
    if kind_type is None:
        return []
    data: dict[str, Any] = {"ref": ref, "subscriber_id": subscriber_id}
    if url is not None:
        data["url"] = url
    return [WebhookEvent(f"t{row_id}", kind_type, at, data)]


def from_subscriber_row(
    row_id: int, kind: str, at: float, subscriber_id: int, list_id: int | None, detail: str
) -> list[WebhookEvent]:
    kind_type = SUBSCRIBER_KINDS.get(kind)
    if kind_type is None:
        return []
    data = {"subscriber_id": subscriber_id, "list_id": list_id, "detail": detail}
    return [WebhookEvent(f"s{row_id}", kind_type, at, data)]
