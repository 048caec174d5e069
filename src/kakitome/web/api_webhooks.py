"""``/api/v1/webhooks``: webhook endpoints and their delivery log.

- ``GET /webhooks`` (paginated), ``POST /webhooks`` (201; the answer holds the signing
  ``secret``, shown this once - no later answer has it), ``GET /webhooks/{id}``,
  ``PATCH /webhooks/{id}`` (url, events, enabled, description), ``DELETE /webhooks/{id}``
  (with its pending deliveries and log);
- ``GET /webhooks/{id}/attempts``: the delivery log of one endpoint, newest first, each
  POST with its event, attempt number, HTTP status, duration and error. Paged by cursor:
  ``next`` is the id of the page's last attempt.

Scopes, as the other routers: ``read`` for GETs (the UI lets viewers see endpoints and
the log too; the secret is never in a GET), ``admin`` for changes - an endpoint is
configuration and receives the service's events.

A URL is ``http`` or ``https`` with a host (``kakitome.webhooks.endpoints``, the UI's
rule); event types are those of ``kakitome.webhooks.events.EVENT_TYPES``. 422 otherwise,
404 for an unknown endpoint. Thin over ``kakitome.webhooks.store.WebhooksStore``;
posting is the worker's (``kakitome.webhooks.dispatcher``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema

from kakitome.accounts.api_keys import ApiKeyInfo
from kakitome.errors import InputError, NotFound
from kakitome.receipts import iso_utc
from kakitome.web.api_lists import Cursor, Id, Limit, Model, Offset, Page, Text, paginate
from kakitome.web.auth import require_scope
from kakitome.web.deps import ServicesDep
from kakitome.webhooks.endpoints import MAX_URL_LENGTH, check_event_types, valid_url
from kakitome.webhooks.events import EVENT_TYPES
from kakitome.webhooks.store import AttemptRecord, EndpointRecord, WebhooksStore


def _event_type(value: str) -> str:
    if value not in EVENT_TYPES:
        raise ValueError(f"unknown event type {value!r}; known: {', '.join(EVENT_TYPES)}")
    return value


def _url(value: str) -> str:
    if not valid_url(value):
        raise ValueError("an http or https URL with a host is needed")
    return value


EventType = Annotated[
    str,
    AfterValidator(_event_type),
    WithJsonSchema({"type": "string", "enum": list(EVENT_TYPES)}),
]
Url = Annotated[Text, Field(min_length=8, max_length=MAX_URL_LENGTH), AfterValidator(_url)]


class WebhookIn(Model):
    url: Url
    events: list[EventType] = Field(min_length=1, max_length=len(EVENT_TYPES))
    description: Text = Field(default="", max_length=200)
    enabled: bool = True


class WebhookUpdate(Model):
    url: Url | None = None
    events: list[EventType] | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES))
    description: Text | None = Field(default=None, max_length=200)
    enabled: bool | None = None


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    enabled: bool
    description: str
    created_at: str | None
    updated_at: str | None


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="signs every POST (Kakitome-Signature); shown this once, keep it"
    )


class AttemptOut(BaseModel):
    id: int
    delivery_id: int
    event_id: str = Field(description="the event's id as in the posted JSON (evt_...)")
    event_type: str
    attempt: int
    at: str | None
    status_code: int | None
    duration_ms: float
    error: str | None
    delivery_status: str = Field(description="pending, delivered or failed")


def webhook_out(record: EndpointRecord) -> WebhookOut:
    return WebhookOut(
        id=record.id,
        url=record.url,
        events=list(record.events),
        enabled=record.enabled,
        description=record.description,
        created_at=iso_utc(record.created_at),
        updated_at=iso_utc(record.updated_at),
    )


def attempt_out(record: AttemptRecord) -> AttemptOut:
    return AttemptOut(
        id=record.id,
        delivery_id=record.delivery_id,
        event_id=f"evt_{record.event_key}",
        event_type=record.event_type,
        attempt=record.attempt,
        at=iso_utc(record.at),
        status_code=record.status_code,
        duration_ms=record.duration_ms,
        error=record.error,
        delivery_status=record.delivery_status,
    )


router = APIRouter(prefix="/api/v1", tags=["webhooks"])
can_read = Depends(require_scope("read"))
can_admin = Depends(require_scope("admin"))


async def _endpoint(db: WebhooksStore, endpoint_id: int) -> EndpointRecord:
    found = await db.get_endpoint(endpoint_id)
    if found is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return found


@router.get("/webhooks", response_model=Page[WebhookOut])
async def list_webhooks(
    services: ServicesDep,
    limit: Limit = 100,
    cursor: Cursor = None,
    offset: Offset = 0,
    key: ApiKeyInfo = can_read,
) -> Page[WebhookOut]:
    """Every endpoint, oldest first (never a secret)."""
    page = paginate(await services.webhooks_store.list_endpoints(), limit, cursor, offset)
    return Page[WebhookOut](items=[webhook_out(e) for e in page.items], next=page.next)


@router.post("/webhooks", status_code=201, response_model=WebhookCreated)
async def create_webhook(
    services: ServicesDep, body: WebhookIn, key: ApiKeyInfo = can_admin
) -> WebhookCreated:
    """A new endpoint; only events from now on are posted to it. The answer holds the
    signing secret, this once."""
    kinds = check_event_types(body.events)
    now = services.clock()
    made = await services.webhooks_store.create_endpoint(
        body.url, kinds, now=now, description=body.description
    )
    if not body.enabled:
        await services.webhooks_store.update_endpoint(made.id, now=now, enabled=False)
        made = await _endpoint(services.webhooks_store, made.id)
    return WebhookCreated(**webhook_out(made).model_dump(), secret=made.secret)


@router.get("/webhooks/{endpoint_id}", response_model=WebhookOut)
async def show_webhook(
    services: ServicesDep, endpoint_id: Id, key: ApiKeyInfo = can_read
) -> WebhookOut:
    return webhook_out(await _endpoint(services.webhooks_store, endpoint_id))


@router.patch("/webhooks/{endpoint_id}", response_model=WebhookOut)
async def update_webhook(
    services: ServicesDep, endpoint_id: Id, body: WebhookUpdate, key: ApiKeyInfo = can_admin
) -> WebhookOut:
    """Change the URL, the event types, the description, or pause (``enabled:
    false``: nothing new is posted) and resume it. The secret stays."""
    values = body.model_dump(exclude_unset=True)
    null = sorted(k for k, v in values.items() if v is None)
    if null:
        raise InputError(f"{', '.join(null)} cannot be null")
    await _endpoint(services.webhooks_store, endpoint_id)
    if not await services.webhooks_store.update_endpoint(
        endpoint_id,
        now=services.clock(),
        url=body.url,
        event_types=None if body.events is None else check_event_types(body.events),
        enabled=body.enabled,
        description=body.description,
    ):
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return webhook_out(await _endpoint(services.webhooks_store, endpoint_id))


@router.delete("/webhooks/{endpoint_id}", status_code=204)
async def delete_webhook(
    services: ServicesDep, endpoint_id: Id, key: ApiKeyInfo = can_admin
) -> None:
    """Remove an endpoint with its pending deliveries and its log."""
    if not await services.webhooks_store.remove_endpoint(endpoint_id):
        raise NotFound(f"no webhook endpoint {endpoint_id}")


@router.get("/webhooks/{endpoint_id}/attempts", response_model=Page[AttemptOut])
async def webhook_attempts(
    services: ServicesDep,
    endpoint_id: Id,
    limit: Limit = 100,
    cursor: Cursor = None,
    key: ApiKeyInfo = can_read,
) -> Page[AttemptOut]:
    """The endpoint's delivery log, newest first; ``next`` is a cursor (an attempt id)."""
    await _endpoint(services.webhooks_store, endpoint_id)
    before = int(cursor) if cursor is not None else None
    rows = await services.webhooks_store.attempts(
        endpoint_id=endpoint_id, limit=limit + 1, before=before
    )
    items = [attempt_out(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page[AttemptOut](items=items, next=str(items[-1].id) if more else None)
