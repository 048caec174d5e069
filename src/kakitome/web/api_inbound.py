"""``/api/v1``: suppression list, SMTP submission users, held inbound mail, TLS-RPT reports.

Scopes: ``read`` for GETs; ``admin`` for changes (suppression add and delete, SMTP users
create and delete, releasing and deleting held mail) - they are configuration or, for
held mail, an operator's decision like the queue actions.

- ``GET/POST /suppressions``, ``DELETE /suppressions/{address}``;
- ``GET/POST /smtp-users``, ``DELETE /smtp-users/{username}``: the password of a new user
  is made here and shown once in the answer (only its argon2id hash is kept);
- ``GET /inbound/held``, ``GET /inbound/{id}``; ``POST /inbound/{id}/release`` hands a
  held message to a forward route (``route``: the match of one, else the first forward
  route matching a recipient; 422 when none fits) and the forwarder POSTs it at its next
  round; ``DELETE /inbound/{id}`` deletes a held message for good. Both are
  ``kakitome.inbound.held``, as ``kakitome inbound release|delete``; 404 when the message
  is not held (any more);
- ``GET /tls-reports``, ``GET /tls-reports/{id}`` (received TLS-RPT reports, read only).

Pages: ``limit`` (1-500) and ``cursor`` (the ``next`` of the previous page) or ``offset``.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from kakitome.accounts.api_keys import ApiKeyInfo
from kakitome.errors import InputError, NotFound
from kakitome.inbound.held import delete_held, release_held
from kakitome.inbound.store import InboundRow, TLSReportRecord
from kakitome.inbound.users import hash_password, validate_username
from kakitome.receipts import iso_utc
from kakitome.settings_overlay import current_settings
from kakitome.suppression import suppression_key
from kakitome.web.api_lists import MAX_ID, Cursor, Limit, Model, Offset, Page, Text, offset_page
from kakitome.web.auth import require_scope
from kakitome.web.deps import ServicesDep
from kakitome.web.errors import ApiError

Reason = Literal["bounce", "complaint", "manual"]


class SuppressionOut(BaseModel):
    address: str
    reason: str
    detail: str
    delivery_id: int | None
    created_at: str | None


class SuppressionIn(Model):
    address: Text = Field(min_length=3, max_length=320)
    reason: Reason = "manual"
    detail: Text = Field(default="", max_length=1000)


class SuppressionAdded(BaseModel):
    address: str
    added: bool


class SmtpUserOut(BaseModel):
    id: int
    username: str
    created_at: str | None
    last_login_at: str | None


class SmtpUserIn(Model):
    username: Text = Field(min_length=1, max_length=128)


class SmtpUserCreated(BaseModel):
    id: int
    username: str
    password: str = Field(description="shown this once; only its hash is kept")


class InboundOut(BaseModel):
    id: str
    received_at: str | None
    listener: str
    kind: str
    status: str
    mail_from: str
    recipients: list[str]
    size: int
    route: str | None
    client_ip: str
    helo: str
    tls: dict[str, Any] | None
    attempts: int
    detail: dict[str, Any] | None


class InboundDetail(InboundOut):
    content: str = Field(description="the message as received (UTF-8, undecodable bytes replaced)")


class ReleaseIn(Model):
    route: Text | None = Field(
        default=None,
        max_length=320,
        description="the match of a forward route in inbound.routes (default: by recipient)",
    )


class ReleasedOut(BaseModel):
    id: str
    released: bool
    route: str


class TlsReportOut(BaseModel):
    id: int
    received_at: str | None
    organization: str
    report_id: str
    period_start: str | None
    period_end: str | None
    contact: str
    successful: int
    failed: int
    inbound_message_id: str | None


class TlsReportDetail(TlsReportOut):
    report: dict[str, Any]


def inbound_out(row: InboundRow) -> InboundOut:
    return InboundOut(
        id=row.id,
        received_at=iso_utc(row.received_at),
        listener=row.listener,
        kind=row.kind,
        status=row.status,
        mail_from=row.mail_from,
        recipients=list(row.recipients),
        size=row.size,
        route=row.route,
        client_ip=row.client_ip,
        helo=row.helo,
        tls=row.tls,
        attempts=row.attempts,
        detail=row.detail,
    )


def report_out(record: TLSReportRecord) -> TlsReportOut:
    r = record.report
    return TlsReportOut(
        id=record.id,
        received_at=iso_utc(record.received_at),
        organization=r.organization,
        report_id=r.report_id,
        period_start=iso_utc(r.period_start),
        period_end=iso_utc(r.period_end),
        contact=r.contact,
        successful=r.successful,
        failed=r.failed,
        inbound_message_id=record.inbound_message_id,
    )


router = APIRouter(prefix="/api/v1", tags=["inbound"])
can_read = Depends(require_scope("read"))
can_admin = Depends(require_scope("admin"))


# -- suppression -----------------------------------------------------------------


@router.get("/suppressions", response_model=Page[SuppressionOut])
async def list_suppressions(
    services: ServicesDep,
    reason: Reason | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    offset: Offset = 0,
    key: ApiKeyInfo = can_read,
) -> Page[SuppressionOut]:
    """Suppressed addresses, oldest first; filter by ``reason``."""
    start = int(cursor) if cursor is not None else offset
    rows = await services.inbound_store.list_suppressions(
        limit=limit + 1, offset=start, reason=reason
    )
    items = [
        SuppressionOut(
            address=r.address,
            reason=r.reason,
            detail=r.detail,
            delivery_id=r.delivery_id,
            created_at=iso_utc(r.created_at),
        )
        for r in rows
    ]
    return offset_page(items, limit, start)


@router.post("/suppressions", status_code=201, response_model=SuppressionAdded)
async def add_suppression(
    services: ServicesDep, body: SuppressionIn, key: ApiKeyInfo = can_admin
) -> SuppressionAdded:
    """Suppress an address (its deliveries bounce with 5.7.1 from now on); ``added``
    is false when it was suppressed already."""
    if "@" not in body.address:
        raise InputError(f"{body.address!r} is not an address")
    added = await services.inbound_store.add_suppression(
        body.address, reason=body.reason, detail=body.detail, now=services.clock()
    )
    return SuppressionAdded(address=suppression_key(body.address), added=added)


@router.delete("/suppressions/{address}", status_code=204)
async def delete_suppression(
    services: ServicesDep,
    address: Annotated[Text, Path(min_length=1, max_length=320)],
    key: ApiKeyInfo = can_admin,
) -> None:
    """Lift a suppression (and forget the address's bounce counts); 404 when absent."""
    if not await services.inbound_store.remove_suppression(address):
        raise NotFound(f"{suppression_key(address)} is not suppressed")


# -- SMTP users ------------------------------------------------------------------


@router.get("/smtp-users", response_model=Page[SmtpUserOut])
async def list_smtp_users(
    services: ServicesDep,
    limit: Limit = 100,
    cursor: Cursor = None,
    offset: Offset = 0,
    key: ApiKeyInfo = can_read,
) -> Page[SmtpUserOut]:
    """Submission users (never a password or hash)."""
    start = int(cursor) if cursor is not None else offset
    users = await services.inbound_store.list_smtp_users()
    items = [
        SmtpUserOut(
            id=u.id,
            username=u.username,
            created_at=iso_utc(u.created_at),
            last_login_at=iso_utc(u.last_login_at),
        )
        for u in users[start : start + limit + 1]
    ]
    return offset_page(items, limit, start)


@router.post("/smtp-users", status_code=201, response_model=SmtpUserCreated)
async def create_smtp_user(
    services: ServicesDep, body: SmtpUserIn, key: ApiKeyInfo = can_admin
) -> SmtpUserCreated:
    """Create a submission user with a new random password, shown this once."""
    name = validate_username(body.username)
    if await services.inbound_store.smtp_user_hash(name) is not None:
        raise ApiError(409, "conflict", f"user {name!r} exists already")
    password = secrets.token_urlsafe(24)
    user_id = await services.inbound_store.create_smtp_user(
        name, hash_password(password), now=services.clock()
    )
    return SmtpUserCreated(id=user_id, username=name, password=password)


@router.delete("/smtp-users/{username}", status_code=204)
async def delete_smtp_user(
    services: ServicesDep,
    username: Annotated[Text, Path(min_length=1, max_length=128)],
    key: ApiKeyInfo = can_admin,
) -> None:
    """Remove a submission user; 404 when there is none of that name."""
    if not await services.inbound_store.remove_smtp_user(username):
        raise NotFound(f"no SMTP user {username!r}")


# -- held inbound mail; TLS-RPT reports (read only) ------------------------------


@router.get("/inbound/held", response_model=Page[InboundOut])
async def list_held(
    services: ServicesDep,
    limit: Limit = 100,
    cursor: Cursor = None,
    offset: Offset = 0,
    key: ApiKeyInfo = can_read,
) -> Page[InboundOut]:
    """Held inbound messages, newest first."""
    start = int(cursor) if cursor is not None else offset
    rows = await services.inbound_store.list_inbound_page(
        status="held", limit=limit + 1, offset=start
    )
    return offset_page([inbound_out(r) for r in rows], limit, start)


@router.get("/inbound/{inbound_id}", response_model=InboundDetail)
async def show_inbound(
    services: ServicesDep,
    inbound_id: Annotated[Text, Path(min_length=1, max_length=64)],
    key: ApiKeyInfo = can_read,
) -> InboundDetail:
    """One received message: envelope, TLS, what was done, and the content."""
    row = await services.inbound_store.get_inbound(inbound_id)
    if row is None:
        raise NotFound(f"no inbound message {inbound_id!r}")
    return InboundDetail(
        **inbound_out(row).model_dump(), content=row.content.decode("utf-8", "replace")
    )


@router.post("/inbound/{inbound_id}/release", response_model=ReleasedOut)
async def release_inbound(
    services: ServicesDep,
    inbound_id: Annotated[Text, Path(min_length=1, max_length=64)],
    body: ReleaseIn | None = None,
    key: ApiKeyInfo = can_admin,
) -> ReleasedOut:
    """Hand a held message to a forward route; the forwarder POSTs it."""
    current = await current_settings(services.settings, services.settings_store)
    chosen = await release_held(
        services.inbound_store,
        current.inbound.routes,  # as changed at run time (settings overlay)
        inbound_id,
        route=body.route if body is not None else None,
        now=services.clock(),
    )
    return ReleasedOut(id=inbound_id, released=True, route=chosen.match)


@router.delete("/inbound/{inbound_id}", status_code=204)
async def delete_inbound(
    services: ServicesDep,
    inbound_id: Annotated[Text, Path(min_length=1, max_length=64)],
    key: ApiKeyInfo = can_admin,
) -> None:
    """Delete a held message for good; 404 when there is no held message of this id."""
    if not (await delete_held(services.inbound_store, [inbound_id]))[inbound_id]:
        raise NotFound(f"no held message {inbound_id!r}")


@router.get("/tls-reports", response_model=Page[TlsReportOut])
async def list_tls_reports(
    services: ServicesDep,
    limit: Limit = 100,
    cursor: Cursor = None,
    offset: Offset = 0,
    key: ApiKeyInfo = can_read,
) -> Page[TlsReportOut]:
    """Received TLS-RPT reports, newest first."""
    start = int(cursor) if cursor is not None else offset
    records = await services.inbound_store.list_tls_report_records(limit=limit + 1, offset=start)
    return offset_page([report_out(r) for r in records], limit, start)


@router.get("/tls-reports/{report_id}", response_model=TlsReportDetail)
async def show_tls_report(
    services: ServicesDep,
    report_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    key: ApiKeyInfo = can_read,
) -> TlsReportDetail:
    """One report with its policies and failure details."""
    record = await services.inbound_store.get_tls_report(report_id)
    if record is None:
        raise NotFound(f"no TLS report {report_id}")
    return TlsReportDetail(**report_out(record).model_dump(), report=record.report.report)
