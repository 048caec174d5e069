"""``/api/v1``, beyond sending: search messages, act on the queue, statistics, API keys.

Scopes: reading (messages, queue, stats) needs ``read``; queue actions and API keys need
``admin``. Errors are the API's usual ``{"error": {"code", "message"}}``. Lists are
paginated with a cursor: pass ``next_before`` from one page as ``before`` for the next.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from kakitome.accounts.api_keys import ApiKeyInfo
from kakitome.accounts.store import MessageQuery
from kakitome.queue.types import PENDING
from kakitome.receipts import iso_utc, queue_row_to_dict
from kakitome.web.auth import SCOPES, require_scope
from kakitome.web.deps import ServicesDep
from kakitome.web.errors import ApiError

StatusName = Literal["queued", "deferred", "delivered", "bounced", "held"]
PendingName = Literal["queued", "deferred", "held"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageItem(BaseModel):
    id: str
    created_at: str | None
    from_: str = Field(serialization_alias="from")
    sender: str
    subject: str
    size: int
    recipients: int
    first_recipient: str
    statuses: dict[str, int]


class MessageList(BaseModel):
    items: list[MessageItem]
    next_before: str | None
    query_kind: str
    # Subject words all under 3 characters cannot use the index: the page examined only
    # this many messages (newest first), so it may hold fewer items than ``limit`` while
    # next_before continues the search. 0: the whole range was searched.
    searched_window: int = 0


class QueueActionIn(_Model):
    """``message_ids`` and/or ``domain`` and/or ``status`` select (AND); ``all: true`` is
    required to act on every pending delivery without a filter."""

    action: Literal["hold", "release", "retry", "delete"]
    message_ids: list[str] | None = Field(default=None, max_length=10_000)
    domain: str | None = Field(default=None, max_length=255)
    status: PendingName | None = None
    all: bool = False


class QueueActionOut(BaseModel):
    action: str
    count: int


class StatsBucket(BaseModel):
    start: str | None
    queued: int
    delivered: int
    delivered_tls: int
    delivered_verified: int
    downgraded: int
    deferred: int
    bounced: int
    verified_share: float | None
    encrypted_share: float | None


class DomainStats(BaseModel):
    domain: str
    delivered: int
    delivered_tls: int
    delivered_verified: int
    downgraded: int
    deferred: int
    bounced: int
    verified_share: float | None
    encrypted_share: float | None


class StatsOut(BaseModel):
    since: str | None
    until: str | None
    total: StatsBucket
    hours: list[StatsBucket]
    domains: list[DomainStats]
    queue: dict[str, int]
    complete: bool


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: str | None
    last_used_at: str | None
    revoked_at: str | None


class ApiKeyIn(_Model):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Literal["send", "read", "admin"]] = Field(min_length=1)


class ApiKeyCreated(ApiKeyOut):
    key: str


def _bucket(item: Any, start: float | None) -> StatsBucket:
    return StatsBucket(
        start=iso_utc(start),
        queued=item.queued,
        delivered=item.delivered,
        delivered_tls=item.delivered_tls,
        delivered_verified=item.delivered_verified,
        downgraded=item.downgraded,
        deferred=item.deferred,
        bounced=item.bounced,
        verified_share=item.verified_share,
        encrypted_share=item.encrypted_share,
    )


router = APIRouter(prefix="/api/v1")
can_read = Depends(require_scope("read"))
can_admin = Depends(require_scope("admin"))


@router.get("/messages", response_model=MessageList, response_model_by_alias=True)
async def search_messages(
    services: ServicesDep,
    q: str = Query(
        "",
        max_length=500,
        description="id, address, @domain or subject words (each a case-insensitive "
        "substring, all required; Japanese needs no spaces)",
    ),
    status: StatusName | None = None,
    since: float | None = Query(None, description="epoch seconds", ge=0, le=1e11),
    until: float | None = Query(None, description="epoch seconds", ge=0, le=1e11),
    before: str | None = Query(None, max_length=26, description="next_before of a page"),
    limit: int = Query(50, ge=1, le=500),
    key: ApiKeyInfo = can_read,
) -> MessageList:
    """Messages, newest first, matching every filter."""
    page = await services.web_store.search_messages(
        MessageQuery(q=q, status=status, since=since, until=until, before=before, limit=limit)
    )
    return MessageList(
        items=[
            MessageItem(
                id=m.id,
                created_at=iso_utc(m.created_at),
                from_=m.header_from,
                sender=m.sender,
                subject=m.subject,
                size=m.size,
                recipients=m.recipients,
                first_recipient=m.first_recipient,
                statuses=m.statuses,
            )
            for m in page.items
        ],
        next_before=page.next_before,
        query_kind=page.kind,
        searched_window=page.window,
    )


@router.get("/queue")
async def list_queue(
    services: ServicesDep,
    status: PendingName | None = None,
    domain: str | None = Query(None, max_length=255),
    before: str | None = Query(None, max_length=26),
    limit: int = Query(100, ge=1, le=1000),
    key: ApiKeyInfo = can_read,
) -> dict[str, Any]:
    """Deliveries not yet final, newest message first."""
    statuses = (status,) if status else PENDING
    rows, next_before = await services.web_store.queue_page(
        statuses, domain=domain, before=before, limit=limit
    )
    return {"items": [queue_row_to_dict(r) for r in rows], "next_before": next_before}


@router.post("/queue/actions", response_model=QueueActionOut)
async def queue_actions(
    body: QueueActionIn, services: ServicesDep, key: ApiKeyInfo = can_admin
) -> QueueActionOut:
    """Hold, release, retry or delete the selected pending deliveries."""
    if not body.message_ids and body.domain is None and body.status is None and not body.all:
        raise ApiError(
            422, "invalid_request", "select deliveries (message_ids, domain, status) or all"
        )
    count = await services.queue.queue_action(
        body.action,
        now=services.clock(),
        message_ids=body.message_ids or None,
        domain=body.domain,
        status=body.status,
    )
    return QueueActionOut(action=body.action, count=count)


@router.get("/stats", response_model=StatsOut)
async def stats(
    services: ServicesDep, hours: int = Query(24, ge=1, le=24 * 90), key: ApiKeyInfo = can_read
) -> StatsOut:
    """Per hour and per receiving domain: volume, outcomes, share encrypted/verified."""
    web_store = services.web_store
    now = services.clock()
    _, more = await web_store.refresh_rollup(now=now)
    since = now - (hours - 1) * 3600
    result = await web_store.stats(since=since, until=now, top_domains=50)
    return StatsOut(
        since=iso_utc(since),
        until=iso_utc(now),
        total=_bucket(result.total, None),
        hours=[_bucket(h, float(h.key)) for h in result.hours],
        domains=[
            DomainStats(
                domain=str(d.key),
                delivered=d.delivered,
                delivered_tls=d.delivered_tls,
                delivered_verified=d.delivered_verified,
                downgraded=d.downgraded,
                deferred=d.deferred,
                bounced=d.bounced,
                verified_share=d.verified_share,
                encrypted_share=d.encrypted_share,
            )
            for d in result.domains
        ],
        queue=await web_store.pending_counts(),
        complete=not more,
    )


def key_out(record: Any) -> ApiKeyOut:
    return ApiKeyOut(
        id=record.id,
        name=record.name,
        prefix=record.prefix,
        scopes=list(record.scopes),
        created_at=iso_utc(record.created_at),
        last_used_at=iso_utc(record.last_used_at),
        revoked_at=iso_utc(record.revoked_at),
    )


@router.get("/api-keys", response_model=list[ApiKeyOut])
async def list_keys(services: ServicesDep, key: ApiKeyInfo = can_admin) -> list[ApiKeyOut]:
    """Every key (never the secret)."""
    return [key_out(k) for k in await services.api_keys.list_api_keys()]


@router.post("/api-keys", status_code=201, response_model=ApiKeyCreated)
async def create_key(
    body: ApiKeyIn, services: ServicesDep, key: ApiKeyInfo = can_admin
) -> ApiKeyCreated:
    """Create a key; the answer holds the key itself, shown this once."""
    scopes = [s for s in SCOPES if s in body.scopes]
    if not body.name.strip():
        raise ApiError(422, "invalid_request", "name: the key needs a name")
    keys = services.api_keys
    secret = await keys.create_api_key(body.name.strip(), scopes, now=services.clock())
    record = next(k for k in await keys.list_api_keys() if secret.startswith(f"kk_{k.prefix}_"))
    return ApiKeyCreated(**key_out(record).model_dump(), key=secret)


@router.delete("/api-keys/{key_id}", status_code=204)
async def revoke_key(
    services: ServicesDep, key_id: int = Path(ge=1, le=2**62), key: ApiKeyInfo = can_admin
) -> None:
    """Revoke a key; 404 when there is no such active key."""
    if not await services.api_keys.revoke_api_key(key_id, now=services.clock()):
        raise ApiError(404, "not_found", f"no active API key {key_id}")
