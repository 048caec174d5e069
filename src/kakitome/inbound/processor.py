"""What the MX does with a message once it is received: bounce, complaint, TLS report, or
route — decided here, applied by ``InboundStore.record_inbound_many`` in the same
transaction that stores the message.

Order: mail to a newsletter list address (sign-up, mailto unsubscribe) is handed to
``ListService.handle_list_mail``; a TLS-RPT report (by its content type) is parsed and
stored; an ARF complaint suppresses the complained-about address; a message to a return
path is a bounce; anything else follows the route its first recipient matched (hold, or
forward over HTTP later).

What is trusted: nothing in the message by itself. A bounce or complaint has an effect only
when it leads to a message we really sent — through the VERP return path it was sent to
(unique per message), or one named inside it — and then only on that message's own
deliveries. A report we cannot tie to a message is stored as ``unmatched`` and changes
nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kakitome.config import InboundRoute, InboundSettings
from kakitome.inbound.bounces import BounceReport, parse_bounce
from kakitome.inbound.headers import TLSInfo
from kakitome.inbound.policy import RecipientClass, RecipientDecision
from kakitome.inbound.reports import ReportError, parse_arf, parse_tlsrpt, tlsrpt_json
from kakitome.inbound.store import (
    ComplaintEffect,
    DeliveryFailure,
    InboundStore,
    NewInbound,
    SentDelivery,
    TLSReportRow,
)
from kakitome.suppression import suppression_key

__all__ = ["SUPPRESSING_FEEDBACK", "MXProcessor", "Received"]

# ARF feedback types that mean "the recipient did not want this" (RFC 5965 §7.3).
SUPPRESSING_FEEDBACK = frozenset({"abuse", "fraud", "virus", "other"})


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the MX received it."""

    original: bytes  # as the client sent it
    content: bytes  # with our Received and Authentication-Results fields
    mail_from: str
    recipients: tuple[tuple[str, RecipientDecision], ...]
    client_ip: str
    helo: str
    tls: TLSInfo | None
    received_at: float


# (local part, domain, envelope sender, client_ip=...) -> what was done, or None when the
# address is not a list's: ``ListService.handle_list_mail``.
ListMailHandler = Callable[..., Awaitable[Any]]


class MXProcessor:
    def __init__(
        self,
        store: InboundStore,
        settings: InboundSettings,
        lists: ListMailHandler | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._lists = lists

    async def process(self, msg: Received) -> NewInbound:
        """Classify ``msg`` and describe its effects (nothing is written here)."""
        base = NewInbound(
            received_at=msg.received_at,
            listener="mx",
            kind="route",
            status="held",
            content=msg.content,
            recipients=tuple(address for address, _ in msg.recipients),
            client_ip=msg.client_ip,
            helo=msg.helo,
            mail_from=msg.mail_from,
            tls=None if msg.tls is None else dict(msg.tls.to_dict()),
        )
        # 0. Newsletter list addresses (issue 7): blank-mail sign-up (空メール) and the
        #    mailto unsubscribe. ListService acts at once (StorageError -> 451, and a retry
        #    is harmless: both actions are idempotent); the message is kept as kind "list".
        #    Other recipients of the same message go on to the steps below.
        if self._lists is not None and any(
            d.kind is RecipientClass.LIST for _, d in msg.recipients
        ):
            done: list[dict[str, object]] = []
            for address, decision in msg.recipients:
                if decision.kind is not RecipientClass.LIST:
                    continue
                local, _, domain = address.rpartition("@")
                result = await self._lists(local, domain, msg.mail_from, client_ip=msg.client_ip)
                done.append(
                    {"recipient": address}
                    if result is None
                    else {
                        "recipient": address,
                        "action": result.action,
                        "list": result.list_name,
                        "address": result.address,
                        "detail": result.detail,
                    }
                )
            rest = tuple(r for r in msg.recipients if r[1].kind is not RecipientClass.LIST)
            if not rest:
                return replace(base, kind="list", status="processed", detail={"lists": done})
            msg = replace(msg, recipients=rest)

        # 1. TLS-RPT.
        try:
            document = tlsrpt_json(msg.original, max_bytes=self._settings.max_report_bytes)
            if document is not None:
                report = parse_tlsrpt(document)
                row = TLSReportRow(
                    report.organization,
                    report.report_id,
                    report.start,
                    report.end,
                    report.contact,
                    report.successful,
                    report.failed,
                    report.report,
                )
                detail: dict[str, object] = {
                    "organization": report.organization,
                    "report_id": report.report_id,
                }
                return replace(
                    base, kind="tlsrpt", status="processed", tls_report=row, detail=detail
                )
        except ReportError as exc:
            return replace(base, kind="tlsrpt", status="failed", detail={"error": str(exc)})

        return_paths = [a for a, d in msg.recipients if d.kind is RecipientClass.RETURN_PATH]
        # 2. ARF complaints.
        complaint = parse_arf(msg.original)
        if complaint is not None:
            candidates = [complaint.original_mail_from, complaint.original_return_path]
            deliveries = await self._deliveries_of([c for c in candidates if c] + return_paths)
            addresses = complaint.original_rcpt_to or complaint.original_to
            effects = []
            if complaint.feedback_type in SUPPRESSING_FEEDBACK:
                for d in _match_addresses(deliveries, addresses):
                    effects.append(
                        ComplaintEffect(
                            d.recipient, complaint.feedback_type, d.delivery_id, d.message_id
                        )
                    )
            detail = {"feedback_type": complaint.feedback_type, "addresses": list(addresses)}
            return replace(
                base,
                kind="complaint",
                status="processed" if effects else "unmatched",
                complaints=tuple(effects),
                delivery_id=effects[0].delivery_id if effects else None,
                detail=detail,
            )

        # 3. Bounces.
        if return_paths:
            bounce = parse_bounce(msg.original)
            deliveries = await self._deliveries_of(return_paths)
            if not deliveries and bounce is not None and bounce.original_return_path:
                deliveries = await self._deliveries_of([bounce.original_return_path])
            failures = _failures(bounce, deliveries) if bounce is not None else []
            detail = _bounce_detail(bounce)
            return replace(
                base,
                kind="bounce",
                status="processed" if failures else "unmatched",
                failures=tuple(failures),
                delivery_id=failures[0].delivery_id if failures else None,
                detail=detail,
            )

        # 4. Routes.
        route = next(
            (d.route for _, d in msg.recipients if d.route is not None),
            InboundRoute(match="*", action="hold"),
        )
        if route.action == "forward" and route.url:
            return replace(
                base,
                kind="route",
                status="forward",
                route=route.match,
                next_attempt_at=msg.received_at,
            )
        return replace(base, kind="route", status="held", route=route.match)

    async def _deliveries_of(self, addresses: Sequence[str]) -> list[SentDelivery]:
        for address in dict.fromkeys(addresses):
            found = await self._store.sent_with_return_path(address)
            if found:
                return found
        return []


def _match_addresses(
    deliveries: Sequence[SentDelivery], addresses: Sequence[str]
) -> list[SentDelivery]:
    by_key = {suppression_key(d.recipient): d for d in deliveries}
    matched = [
        by_key[k] for k in dict.fromkeys(suppression_key(a) for a in addresses) if k in by_key
    ]
    if not matched and len(deliveries) == 1 and len(addresses) <= 1:
        matched = [deliveries[0]]  # redacted or rewritten recipient, one possible delivery
    return matched


def _failures(report: BounceReport, deliveries: Sequence[SentDelivery]) -> list[DeliveryFailure]:
    by_key = {suppression_key(d.recipient): d for d in deliveries}
    out: list[DeliveryFailure] = []
    for status in report.recipients:
        found = by_key.get(suppression_key(status.recipient)) if status.recipient else None
        if found is None and status.original_recipient:
            found = by_key.get(suppression_key(status.original_recipient))
        if found is None and len(deliveries) == 1 and len(report.recipients) == 1:
            found = deliveries[0]  # forwarded or unnamed: the message had one recipient
        if found is None:
            continue
        out.append(
            DeliveryFailure(
                delivery_id=found.delivery_id,
                message_id=found.message_id,
                recipient=found.recipient,
                action=status.action,
                permanent=status.permanent,
                code=status.reply_code,
                enhanced=status.status,
                text=status.diagnostic,
                remote_mta=status.remote_mta,
            )
        )
    return out


def _bounce_detail(report: BounceReport | None) -> dict[str, object]:
    if report is None:
        return {"format": None, "recipients": []}
    return {
        "format": report.format,
        "reporting_mta": report.reporting_mta,
        "recipients": [
            {
                "recipient": r.recipient,
                "action": r.action,
                "status": r.status,
                "code": r.code,
                "diagnostic": r.diagnostic[:300],
            }
            for r in report.recipients[:20]
        ],
    }
