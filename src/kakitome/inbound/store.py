"""Storage for the inbound side: suppression list, bounce counts, SMTP users, inbound mail,
TLS-RPT reports, and the delivery changes that bounces and complaints cause.

A sibling of the queue store on the same engine (``Database.engine``); the same rules: each public
method is one transaction, writes return only after the commit, and a database that cannot
commit raises ``StorageError`` (the SMTP listener then answers 451 and keeps nothing).

``record_inbound_many`` is the group commit of the MX: the messages accepted by many
connections at about the same time, and everything they cause (a delivery marked bounced,
an event, a bounce count, a suppression, a TLS-RPT report), go into one transaction.

Limits: on SQLite this class serialises its own writes with an asyncio lock and takes the
write lock at BEGIN; writers of the ``Database`` in the same process wait on SQLite's
``busy_timeout`` instead (both are short transactions).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from kakitome.queue.store import insert_event, mark_bounced
from kakitome.store.ids import new_message_id
from kakitome.store.schema import deliveries, messages
from kakitome.store.schema_inbound import (
    bounce_counts,
    inbound_messages,
    smtp_users,
    suppressions,
    tlsrpt_received,
)
from kakitome.store.transactions import reading, writing
from kakitome.suppression import Thresholds, suppression_key

_CHUNK = 5_000
# A bounce may arrive for a delivery in any of these states (delivered is the usual one:
# the remote MX accepted, then failed later); a bounced delivery stays as it is.
_BOUNCEABLE = ("delivered", "queued", "deferred", "held")


@dataclass(frozen=True, slots=True)
class SuppressionRecord:
    address: str
    reason: str
    detail: str
    delivery_id: int | None
    created_at: float


@dataclass(frozen=True, slots=True)
class SMTPUserRecord:
    id: int
    username: str
    created_at: float
    last_login_at: float | None


@dataclass(frozen=True, slots=True)
class SentDelivery:
    """A delivery of a message found by its return path."""

    delivery_id: int
    message_id: str
    recipient: str
    status: str


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """What a DSN said about one of our deliveries.

    ``action`` is RFC 3464's (failed, delayed, delivered, relayed, expanded); only
    ``failed`` marks the delivery bounced and counts toward suppression."""

    delivery_id: int
    message_id: str
    recipient: str
    action: str
    permanent: bool
    code: int
    enhanced: str | None
    text: str
    remote_mta: str | None = None


@dataclass(frozen=True, slots=True)
class ComplaintEffect:
    """An ARF complaint about mail to ``address`` (the delivery when we found it)."""

    address: str
    feedback_type: str
    delivery_id: int | None = None
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class TLSReportRow:
    organization: str
    report_id: str
    period_start: float | None
    period_end: float | None
    contact: str
    successful: int
    failed: int
    report: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TLSReportRecord:
    """A stored TLS-RPT report with its row id and the inbound message that carried it."""

    id: int
    received_at: float
    inbound_message_id: str | None
    report: TLSReportRow


@dataclass(frozen=True, slots=True)
class NewInbound:
    """One accepted message and what it causes."""

    received_at: float
    listener: str  # mx | submission
    kind: str  # bounce | complaint | tlsrpt | route
    status: str  # processed | unmatched | held | forward | failed
    content: bytes
    recipients: tuple[str, ...]
    client_ip: str = ""
    helo: str = ""
    mail_from: str = ""
    tls: dict[str, Any] | None = None
    route: str | None = None
    delivery_id: int | None = None
    detail: dict[str, Any] | None = None
    next_attempt_at: float | None = None
    failures: tuple[DeliveryFailure, ...] = ()
    complaints: tuple[ComplaintEffect, ...] = ()
    tls_report: TLSReportRow | None = None


@dataclass(frozen=True, slots=True)
class InboundRow:
    id: str
    received_at: float
    listener: str
    kind: str
    status: str
    client_ip: str
    helo: str
    mail_from: str
    recipients: tuple[str, ...]
    size: int
    tls: dict[str, Any] | None
    route: str | None
    delivery_id: int | None
    detail: dict[str, Any] | None
    attempts: int
    next_attempt_at: float | None
    content: bytes = field(repr=False, default=b"")


class InboundStore:
    """The inbound tables on the engine of a ``Database``."""

    def __init__(self, engine: AsyncEngine, thresholds: Thresholds | None = None) -> None:
        self._engine = engine
        self._is_pg = engine.dialect.name == "postgresql"
        self._lock = asyncio.Lock()
        self.thresholds = thresholds or Thresholds()

    # -- transactions -------------------------------------------------------------------

    def _write(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return writing(self._engine, self._lock)

    def _read(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return reading(self._engine)

    def _insert(self, table: Any) -> Any:
        return postgresql.insert(table) if self._is_pg else sqlite.insert(table)

    # -- suppression --------------------------------------------------------------------

    async def suppressed_among(self, addresses: Iterable[str]) -> set[str]:
        """The ``suppression_key`` of each given address that is suppressed."""
        keys = sorted({suppression_key(a) for a in addresses})
        found: set[str] = set()
        if not keys:
            return found
        async with self._read() as conn:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                rows = await conn.execute(
                    select(suppressions.c.address).where(suppressions.c.address.in_(chunk))
                )
                found.update(row.address for row in rows)
        return found

    async def add_suppression(
        self,
        address: str,
        *,
        reason: str,
        now: float,
        detail: str = "",
        delivery_id: int | None = None,
    ) -> bool:
        """Suppress an address; False when it was suppressed already (kept as it was)."""
        async with self._write() as conn:
            return await self._suppress(
                conn, suppression_key(address), reason, detail, delivery_id, now
            )

    async def remove_suppression(self, address: str) -> bool:
        """Lift a suppression and forget the address's bounce counts; False when absent."""
        key = suppression_key(address)
        async with self._write() as conn:
            result = await conn.execute(delete(suppressions).where(suppressions.c.address == key))
            await conn.execute(delete(bounce_counts).where(bounce_counts.c.address == key))
        return bool(result.rowcount)

    async def list_suppressions(
        self, *, limit: int = 100, offset: int = 0, reason: str | None = None
    ) -> list[SuppressionRecord]:
        statement = select(suppressions).order_by(suppressions.c.id).limit(limit).offset(offset)
        if reason is not None:
            statement = statement.where(suppressions.c.reason == reason)
        async with self._read() as conn:
            return [
                SuppressionRecord(r.address, r.reason, r.detail, r.delivery_id, r.created_at)
                for r in await conn.execute(statement)
            ]

    async def bounce_count(self, address: str) -> tuple[int, int]:
        """(permanent, temporary) failures counted for an address."""
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(bounce_counts).where(bounce_counts.c.address == suppression_key(address))
                )
            ).first()
        return (0, 0) if row is None else (int(row.permanent), int(row.temporary))

    async def _suppress(
        self,
        conn: AsyncConnection,
        key: str,
        reason: str,
        detail: str,
        delivery_id: int | None,
        now: float,
        message_id: str | None = None,
    ) -> bool:
        statement = (
            self._insert(suppressions)
            .values(
                address=key,
                reason=reason,
                detail=detail[:2000],
                delivery_id=delivery_id,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["address"])
        )
        added = bool((await conn.execute(statement)).rowcount)
        if added:
            await insert_event(
                conn,
                "suppressed",
                now=now,
                message_id=message_id,
                delivery_id=delivery_id,
                data={"address": key, "reason": reason, "detail": detail[:500]},
            )
        return added

    # -- SMTP users ---------------------------------------------------------------------

    async def create_smtp_user(self, username: str, password_hash: str, *, now: float) -> int:
        """Store a user; raises StorageError when the name is taken."""
        async with self._write() as conn:
            result = await conn.execute(
                insert(smtp_users)
                .values(username=username, password_hash=password_hash, created_at=now)
                .returning(smtp_users.c.id)
            )
            return int(result.scalar_one())

    async def smtp_user_hash(self, username: str) -> tuple[int, str] | None:
        """(id, argon2 hash) of a user, or None."""
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(smtp_users.c.id, smtp_users.c.password_hash).where(
                        smtp_users.c.username == username
                    )
                )
            ).first()
        return None if row is None else (int(row.id), str(row.password_hash))

    async def set_smtp_password_hash(self, user_id: int, password_hash: str) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(smtp_users)
                .where(smtp_users.c.id == user_id)
                .values(password_hash=password_hash)
            )

    async def touch_smtp_user(self, user_id: int, *, now: float) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(smtp_users).where(smtp_users.c.id == user_id).values(last_login_at=now)
            )

    async def list_smtp_users(self) -> list[SMTPUserRecord]:
        async with self._read() as conn:
            rows = await conn.execute(select(smtp_users).order_by(smtp_users.c.id))
            return [SMTPUserRecord(r.id, r.username, r.created_at, r.last_login_at) for r in rows]

    async def remove_smtp_user(self, username: str) -> bool:
        async with self._write() as conn:
            result = await conn.execute(delete(smtp_users).where(smtp_users.c.username == username))
        return bool(result.rowcount)

    # -- return paths -------------------------------------------------------------------

    async def sent_with_return_path(self, address: str) -> list[SentDelivery]:
        """The deliveries of the messages whose envelope sender is ``address`` (a VERP
        return path is unique to its message; ``ix_messages_sender`` finds it)."""
        statement = (
            select(
                deliveries.c.id,
                deliveries.c.message_id,
                deliveries.c.recipient,
                deliveries.c.status,
            )
            .join(messages, messages.c.id == deliveries.c.message_id)
            .where(messages.c.sender.in_(_return_path_forms(address)))
            .order_by(deliveries.c.id)
            .limit(1000)
        )
        async with self._read() as conn:
            return [
                SentDelivery(int(r.id), r.message_id, r.recipient, r.status)
                for r in await conn.execute(statement)
            ]

    async def is_return_path(self, address: str) -> bool:
        """True when some message of ours went out with this envelope sender."""
        async with self._read() as conn:
            found = await conn.scalar(
                select(messages.c.id)
                .where(messages.c.sender.in_(_return_path_forms(address)))
                .limit(1)
            )
        return found is not None

    # -- inbound mail -------------------------------------------------------------------

    async def record_inbound(self, item: NewInbound) -> str:
        return (await self.record_inbound_many([item]))[0]

    async def record_inbound_many(self, items: Sequence[NewInbound]) -> list[str]:
        """Store accepted messages and apply what they cause, in one transaction; return
        their ids after the commit."""
        ids = [new_message_id(int(item.received_at * 1000)) for item in items]
        rows = [
            {
                "id": inbound_id,
                "received_at": item.received_at,
                "listener": item.listener,
                "kind": item.kind,
                "status": item.status,
                "client_ip": item.client_ip,
                "helo": item.helo[:255],
                "mail_from": item.mail_from[:998],
                "recipients": list(item.recipients),
                "size": len(item.content),
                "tls": item.tls,
                "route": item.route,
                "delivery_id": item.delivery_id,
                "detail": item.detail,
                "attempts": 0,
                "next_attempt_at": item.next_attempt_at,
                "content": item.content,
            }
            for inbound_id, item in zip(ids, items, strict=True)
        ]
        async with self._write() as conn:
            await conn.execute(insert(inbound_messages), rows)
            for inbound_id, item in zip(ids, items, strict=True):
                for failure in item.failures:
                    await self._apply_failure(conn, inbound_id, failure, item.received_at)
                for complaint in item.complaints:
                    await self._apply_complaint(conn, inbound_id, complaint, item.received_at)
                if item.tls_report is not None:
                    await self._store_report(conn, inbound_id, item.tls_report, item.received_at)
        return ids

    async def mark_delivery_bounced(
        self, failure: DeliveryFailure, *, now: float, source: str = "dsn"
    ) -> None:
        """Mark one delivery bounced with the remote diagnostic, record the event, count
        the failure and suppress the address when a threshold is reached."""
        async with self._write() as conn:
            await self._apply_failure(conn, source, failure, now)

    async def _apply_failure(
        self, conn: AsyncConnection, inbound_id: str, failure: DeliveryFailure, now: float
    ) -> None:
        data = {
            "source": "dsn",
            "inbound_message_id": inbound_id,
            "action": failure.action,
            "reply": {"code": failure.code, "enhanced": failure.enhanced, "text": failure.text},
            "remote_mta": failure.remote_mta,
            "permanent": failure.permanent,
        }
        if failure.action != "failed":
            await insert_event(
                conn,
                "delayed" if failure.action == "delayed" else f"dsn_{failure.action}",
                now=now,
                message_id=failure.message_id,
                delivery_id=failure.delivery_id,
                data=data,
            )
            return
        await mark_bounced(
            conn,
            failure.delivery_id,
            now=now,
            code=failure.code,
            enhanced=failure.enhanced,
            text=failure.text[:2000],
            statuses=_BOUNCEABLE,
        )
        await insert_event(
            conn,
            "bounced",
            now=now,
            message_id=failure.message_id,
            delivery_id=failure.delivery_id,
            data=data,
        )
        key = suppression_key(failure.recipient)
        permanent, temporary = (1, 0) if failure.permanent else (0, 1)
        upsert = self._insert(bounce_counts).values(
            address=key,
            permanent=permanent,
            temporary=temporary,
            last_status=failure.enhanced,
            updated_at=now,
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=["address"],
            set_={
                "permanent": bounce_counts.c.permanent + permanent,
                "temporary": bounce_counts.c.temporary + temporary,
                "last_status": failure.enhanced,
                "updated_at": now,
            },
        ).returning(bounce_counts.c.permanent, bounce_counts.c.temporary)
        counts = (await conn.execute(upsert)).one()
        if self.thresholds.reached(int(counts.permanent), int(counts.temporary)):
            detail = f"{failure.code} {failure.enhanced or ''} {failure.text}".strip()
            await self._suppress(
                conn, key, "bounce", detail, failure.delivery_id, now, failure.message_id
            )

    async def _apply_complaint(
        self, conn: AsyncConnection, inbound_id: str, complaint: ComplaintEffect, now: float
    ) -> None:
        await insert_event(
            conn,
            "complained",
            now=now,
            message_id=complaint.message_id,
            delivery_id=complaint.delivery_id,
            data={
                "inbound_message_id": inbound_id,
                "address": complaint.address,
                "feedback_type": complaint.feedback_type,
            },
        )
        await self._suppress(
            conn,
            suppression_key(complaint.address),
            "complaint",
            f"ARF {complaint.feedback_type}",
            complaint.delivery_id,
            now,
            complaint.message_id,
        )

    async def _store_report(
        self, conn: AsyncConnection, inbound_id: str, report: TLSReportRow, now: float
    ) -> None:
        statement = (
            self._insert(tlsrpt_received)
            .values(
                inbound_message_id=inbound_id,
                received_at=now,
                organization=report.organization[:255],
                report_id=report.report_id[:255],
                period_start=report.period_start,
                period_end=report.period_end,
                contact=report.contact[:998],
                successful=report.successful,
                failed=report.failed,
                report=report.report,
            )
            .on_conflict_do_nothing(index_elements=["organization", "report_id"])
        )
        await conn.execute(statement)

    async def get_inbound(self, inbound_id: str) -> InboundRow | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(inbound_messages).where(inbound_messages.c.id == inbound_id)
                )
            ).first()
        return None if row is None else _inbound_row(row)

    async def list_inbound(
        self, *, kind: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[InboundRow]:
        statement = select(inbound_messages).order_by(inbound_messages.c.id).limit(limit)
        if kind is not None:
            statement = statement.where(inbound_messages.c.kind == kind)
        if status is not None:
            statement = statement.where(inbound_messages.c.status == status)
        async with self._read() as conn:
            return [_inbound_row(row) for row in await conn.execute(statement)]

    async def count_inbound(self) -> int:
        async with self._read() as conn:
            return int(await conn.scalar(select(func.count()).select_from(inbound_messages)) or 0)

    async def list_inbound_page(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[InboundRow]:
        """Like ``list_inbound`` without the content (for listings), newest first."""
        columns = [c for c in inbound_messages.c if c.name != "content"]
        order = inbound_messages.c.id.desc() if newest_first else inbound_messages.c.id
        statement = select(*columns).order_by(order).limit(limit).offset(offset)
        if kind is not None:
            statement = statement.where(inbound_messages.c.kind == kind)
        if status is not None:
            statement = statement.where(inbound_messages.c.status == status)
        async with self._read() as conn:
            return [_inbound_row(row, content=False) for row in await conn.execute(statement)]

    async def release_inbound(self, inbound_id: str, *, route: str, now: float) -> bool:
        """Hand a held message to the forward route ``route`` (the forwarder sends it at
        once); False when there is no held message with this id."""
        async with self._write() as conn:
            result = await conn.execute(
                update(inbound_messages)
                .where(inbound_messages.c.id == inbound_id, inbound_messages.c.status == "held")
                .values(status="forward", route=route, attempts=0, next_attempt_at=now)
            )
        return bool(result.rowcount)

    async def delete_inbound(self, inbound_id: str, *, statuses: Sequence[str]) -> bool:
        """Delete a stored message whose status is one of ``statuses``; False otherwise."""
        async with self._write() as conn:
            result = await conn.execute(
                delete(inbound_messages).where(
                    inbound_messages.c.id == inbound_id,
                    inbound_messages.c.status.in_(list(statuses)),
                )
            )
        return bool(result.rowcount)

    async def list_tls_report_records(
        self, *, limit: int = 100, offset: int = 0
    ) -> list[TLSReportRecord]:
        """Received TLS-RPT reports, newest first."""
        statement = (
            select(tlsrpt_received)
            .order_by(tlsrpt_received.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self._read() as conn:
            return [_report_record(r) for r in await conn.execute(statement)]

    async def get_tls_report(self, report_id: int) -> TLSReportRecord | None:
        async with self._read() as conn:
            row = (
                await conn.execute(select(tlsrpt_received).where(tlsrpt_received.c.id == report_id))
            ).first()
        return None if row is None else _report_record(row)

    async def list_tls_reports(self, *, limit: int = 100) -> list[TLSReportRow]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(tlsrpt_received).order_by(tlsrpt_received.c.id).limit(limit)
            )
            return [
                TLSReportRow(
                    r.organization,
                    r.report_id,
                    r.period_start,
                    r.period_end,
                    r.contact,
                    int(r.successful),
                    int(r.failed),
                    r.report,
                )
                for r in rows
            ]

    # -- forwarding ---------------------------------------------------------------------

    async def due_forwards(self, *, now: float, limit: int = 50) -> list[InboundRow]:
        """Messages waiting to be forwarded whose next attempt is due."""
        statement = (
            select(inbound_messages)
            .where(
                inbound_messages.c.status == "forward", inbound_messages.c.next_attempt_at <= now
            )
            .order_by(inbound_messages.c.next_attempt_at)
            .limit(limit)
        )
        async with self._read() as conn:
            return [_inbound_row(row) for row in await conn.execute(statement)]

    async def forward_result(
        self,
        inbound_id: str,
        *,
        status: str,
        now: float,
        next_attempt_at: float | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record a forwarding attempt: ``forwarded``, ``failed`` (given up), or ``forward``
        again at ``next_attempt_at``."""
        values: dict[str, Any] = {
            "status": status,
            "attempts": inbound_messages.c.attempts + 1,
            "next_attempt_at": next_attempt_at,
        }
        if detail is not None:
            values["detail"] = detail
        async with self._write() as conn:
            await conn.execute(
                update(inbound_messages).where(inbound_messages.c.id == inbound_id).values(**values)
            )


def _return_path_forms(address: str) -> list[str]:
    """The address as given and in lower case: VERP return paths are made lower-case, and
    some MTAs upper-case the local part of the address they bounce to."""
    address = address.strip().strip("<>")
    return list(dict.fromkeys([address, address.lower()]))


def _report_record(r: Any) -> TLSReportRecord:
    return TLSReportRecord(
        id=int(r.id),
        received_at=r.received_at,
        inbound_message_id=r.inbound_message_id,
        report=TLSReportRow(
            r.organization,
            r.report_id,
            r.period_start,
            r.period_end,
            r.contact,
            int(r.successful),
            int(r.failed),
            r.report,
        ),
    )


def _inbound_row(row: Any, *, content: bool = True) -> InboundRow:
    return InboundRow(
        id=row.id,
        received_at=row.received_at,
        listener=row.listener,
        kind=row.kind,
        status=row.status,
        client_ip=row.client_ip,
        helo=row.helo,
        mail_from=row.mail_from,
        recipients=tuple(row.recipients or ()),
        size=row.size,
        tls=row.tls,
        route=row.route,
        delivery_id=row.delivery_id,
        detail=row.detail,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        content=bytes(row.content) if content else b"",
    )

