"""``/api/v1/lists``: mailing lists, subscribers (paginated, import, export) and segments.

Scopes (every route needs a key; ``admin`` includes the others):

- ``read``: every GET (lists, members, segment counts, CSV export);
- ``send``: subscribers and segments (add, update, delete, import CSV);
- ``admin``: lists themselves (create, update, delete) - they carry the sender identity.

Pagination, the same on every collection of the API v1 resources: ``limit`` (1-500),
then either ``cursor`` (the ``next`` of the previous page) or ``offset``; the answer is
``{"items": [...], "next": "<cursor>" | null}``. Subscribers page by cursor (the last
subscriber id, stable under inserts); ``offset`` is accepted too and skips rows.

Errors are the API's usual ``{"error": {"code", "message"}}``: 404 for an unknown list,
subscriber or segment, 422 for invalid input (the service's ``InputError``).

The shared pieces of the resource modules (``Page``, ``Text``, ``paginate``, ``Cursor``)
live here.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from kakitome.accounts.api_keys import ApiKeyInfo
from kakitome.errors import InputError, NotFound
from kakitome.lists.model import MailingList, Membership, NewList, OptIn, Segment
from kakitome.lists.service import ListService
from kakitome.receipts import iso_utc
from kakitome.web.auth import require_scope
from kakitome.web.deps import ServicesDep

T = TypeVar("T")

MAX_LIMIT = 500
MAX_ID = 2**62


def _clean(value: str) -> str:
    """Refuse what no database column can hold: NUL and lone surrogates (422, not 500)."""
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("the text is not valid Unicode") from exc
    return value


Text = Annotated[str, AfterValidator(_clean)]
"""A string that can be stored (no NUL, no lone surrogate)."""

Id = Annotated[int, Path(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size (1-500)")]
Cursor = Annotated[
    str | None,
    Query(pattern=r"^[0-9]{1,18}$", description="the `next` of the previous page"),
]
Offset = Annotated[int, Query(ge=0, le=10**9, description="rows to skip (instead of cursor)")]


class Model(BaseModel):
    """Request bodies: unknown fields are refused (422)."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    """One page of a collection: pass ``next`` as ``cursor`` for the following page."""

    items: list[T]
    next: str | None = None


def paginate(items: Sequence[T], limit: int, cursor: str | None, offset: int) -> Page[T]:
    """A page of an in-memory sequence (cursor = offset of the next item)."""
    start = int(cursor) if cursor is not None else offset
    chunk = list(items[start : start + limit])
    more = start + limit < len(items)
    return Page[T](items=chunk, next=str(start + limit) if more else None)


def offset_page(rows: list[T], limit: int, start: int) -> Page[T]:
    """A page read with ``limit + 1`` rows at ``start``: the extra row says there is more."""
    more = len(rows) > limit
    return Page[T](items=rows[:limit], next=str(start + limit) if more else None)


# -- models ------------------------------------------------------------------------------

HHMM = Annotated[str, Field(pattern=r"^[0-2][0-9]:[0-5][0-9]$")]


class ListIn(Model):
    name: Text = Field(min_length=1, max_length=64, description="slug: a-z, 0-9, '-'")
    title: Text = Field(default="", max_length=255)
    description: Text = Field(default="", max_length=5000)
    opt_in: Literal["single", "double"] = "double"
    from_name: Text = Field(default="", max_length=255)
    from_address: Text = Field(default="", max_length=320)
    reply_to: Text = Field(default="", max_length=320)
    sender_organization: Text = Field(default="", max_length=255)
    sender_postal_address: Text = Field(default="", max_length=1000)
    time_zone: Text = Field(default="Asia/Tokyo", max_length=64)
    quiet_start: HHMM | None = None
    quiet_end: HHMM | None = None
    encoding: Literal["utf-8", "iso-2022-jp"] = "utf-8"
    mail_domain: Text | None = Field(default=None, max_length=255)


class ListUpdate(Model):
    """The fields to change (the others keep their value); ``name`` cannot change.
    ``quiet_start``/``quiet_end``/``mail_domain`` may be set to null (no quiet hours, no
    mail domain); the other fields may not."""

    title: Text | None = Field(default=None, max_length=255)
    description: Text | None = Field(default=None, max_length=5000)
    opt_in: Literal["single", "double"] | None = None
    from_name: Text | None = Field(default=None, max_length=255)
    from_address: Text | None = Field(default=None, max_length=320)
    reply_to: Text | None = Field(default=None, max_length=320)
    sender_organization: Text | None = Field(default=None, max_length=255)
    sender_postal_address: Text | None = Field(default=None, max_length=1000)
    time_zone: Text | None = Field(default=None, max_length=64)
    quiet_start: HHMM | None = None
    quiet_end: HHMM | None = None
    encoding: Literal["utf-8", "iso-2022-jp"] | None = None
    mail_domain: Text | None = Field(default=None, max_length=255)


_NULLABLE = frozenset({"quiet_start", "quiet_end", "mail_domain"})


class ListOut(BaseModel):
    id: int
    name: str
    title: str
    description: str
    opt_in: str
    from_name: str
    from_address: str
    reply_to: str
    sender_organization: str
    sender_postal_address: str
    time_zone: str
    quiet_start: str | None
    quiet_end: str | None
    encoding: str
    mail_domain: str | None
    address: str | None
    created_at: str | None
    members: dict[str, int] | None = None


class SubscriberOut(BaseModel):
    id: int
    address: str
    name: str
    attributes: dict[str, Any]
    status: str
    created_at: str | None
    updated_at: str | None
    confirmed_at: str | None
    bounced_at: str | None
    opt_in: dict[str, Any]


Status = Literal["unconfirmed", "subscribed", "unsubscribed", "bounced", "complained"]


class SubscriberIn(Model):
    email: Text = Field(min_length=3, max_length=320)
    name: Text | None = Field(default=None, max_length=255)
    attributes: dict[Text, Any] | None = None
    confirmed: bool = Field(
        default=False, description="consent already proven: subscribed even on double opt-in"
    )
    send_confirmation: bool = True


class SubscriberUpdate(Model):
    name: Text | None = Field(default=None, max_length=255)
    attributes: dict[Text, Any] | None = None
    status: Status | None = None
    reason: Text = Field(default="", max_length=1000)


class RejectedRowOut(BaseModel):
    line: int
    reason: str
    value: str


class ImportReportOut(BaseModel):
    encoding: str
    rows: int
    inserted: int
    updated: int
    duplicates: int
    rejected: list[RejectedRowOut]
    seconds: float


class SegmentIn(Model):
    name: Text = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    expression: Text | dict[Text, Any] = Field(description="segment language text or JSON")
    list_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class SegmentOut(BaseModel):
    id: int
    name: str
    expression: str
    list_id: int | None
    created_at: str | None


class CountOut(BaseModel):
    count: int


def list_out(item: MailingList, members: dict[str, int] | None = None) -> ListOut:
    data = item.to_dict()
    data["created_at"] = iso_utc(item.created_at)
    return ListOut(**data, members=members)


def subscriber_out(member: Membership) -> SubscriberOut:
    person = member.subscriber
    return SubscriberOut(
        id=person.id,
        address=person.address,
        name=person.name,
        attributes=dict(person.attributes),
        status=member.status,
        created_at=iso_utc(member.created_at),
        updated_at=iso_utc(member.updated_at),
        confirmed_at=iso_utc(member.confirmed_at),
        bounced_at=iso_utc(person.bounced_at),
        opt_in=member.to_dict()["opt_in"],
    )


def segment_out(segment: Segment) -> SegmentOut:
    return SegmentOut(
        id=segment.id,
        name=segment.name,
        expression=segment.expression,
        list_id=segment.list_id,
        created_at=iso_utc(segment.created_at),
    )


_CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}},
    }
}


router = APIRouter(prefix="/api/v1", tags=["lists"])
can_read = Depends(require_scope("read"))
can_send = Depends(require_scope("send"))
can_admin = Depends(require_scope("admin"))


# -- lists -----------------------------------------------------------------------


@router.get("/lists", response_model=Page[ListOut])
async def all_lists(
    services: ServicesDep,
    limit: Limit = 100,
    cursor: Cursor = None,
    offset: Offset = 0,
    key: ApiKeyInfo = can_read,
) -> Page[ListOut]:
    """Every list, by name."""
    found = await services.lists.lists()
    page = paginate(found, limit, cursor, offset)
    return Page[ListOut](items=[list_out(x) for x in page.items], next=page.next)


@router.post("/lists", status_code=201, response_model=ListOut)
async def create_list(services: ServicesDep, body: ListIn, key: ApiKeyInfo = can_admin) -> ListOut:
    """Create a list; 422 for a bad field or a name already taken."""
    created = await services.lists.create_list(NewList(**body.model_dump()))
    return list_out(created)


@router.get("/lists/{list_id}", response_model=ListOut)
async def show_list(services: ServicesDep, list_id: Id, key: ApiKeyInfo = can_read) -> ListOut:
    """One list with its member counts per status."""
    found = await services.lists.get_list(list_id)
    return list_out(found, await services.lists.count_members(found.id))


@router.patch("/lists/{list_id}", response_model=ListOut)
async def update_list(
    services: ServicesDep, list_id: Id, body: ListUpdate, key: ApiKeyInfo = can_admin
) -> ListOut:
    """Change a list's settings (validated as on create; 422 and nothing changed when
    a field is invalid). The name cannot change."""
    changes = body.model_dump(exclude_unset=True)
    null = sorted(k for k, v in changes.items() if v is None and k not in _NULLABLE)
    if null:
        raise InputError(f"{', '.join(null)} cannot be null")
    updated = await services.lists.update_list(list_id, **changes)
    return list_out(updated, await services.lists.count_members(updated.id))


@router.delete("/lists/{list_id}", status_code=204)
async def delete_list(services: ServicesDep, list_id: Id, key: ApiKeyInfo = can_admin) -> None:
    """Delete a list, its memberships and segments (subscribers and history stay)."""
    await services.lists.remove_list(list_id)


# -- subscribers -----------------------------------------------------------------


@router.get("/lists/{list_id}/subscribers", response_model=Page[SubscriberOut])
async def list_subscribers(
    services: ServicesDep,
    list_id: Id,
    status: Status | None = None,
    q: Annotated[Text | None, Query(max_length=320, description="address contains")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    offset: Offset = 0,
    key: ApiKeyInfo = can_read,
) -> Page[SubscriberOut]:
    """Members in subscriber-id order; filters: ``status``, ``q`` (address contains).
    ``next`` is a cursor (the last subscriber id of the page)."""
    after = int(cursor) if cursor is not None else 0
    to_skip = 0 if cursor is not None else offset
    needle = q.lower() if q else None
    items: list[SubscriberOut] = []
    last = after
    exhausted = False
    # Read in chunks until the page is full (filters may drop rows), at most 20 reads.
    for _ in range(20):
        chunk = await services.lists.members(
            list_id, status=status, after_subscriber_id=last, limit=MAX_LIMIT
        )
        if not chunk:
            exhausted = True
            break
        for member in chunk:
            last = member.subscriber.id
            if needle and needle not in member.subscriber.address.lower():
                continue
            if to_skip:
                to_skip -= 1
                continue
            items.append(subscriber_out(member))
            if len(items) >= limit:
                break
        if len(items) >= limit:
            break
        if len(chunk) < MAX_LIMIT:
            exhausted = True
            break
    return Page[SubscriberOut](items=items, next=None if exhausted else str(last))


@router.post("/lists/{list_id}/subscribers", status_code=201, response_model=SubscriberOut)
async def add_subscriber(
    services: ServicesDep, list_id: Id, body: SubscriberIn, key: ApiKeyInfo = can_send
) -> SubscriberOut:
    """Subscribe an address (upsert); on a double opt-in list it is ``unconfirmed`` and
    a confirmation mail is queued, unless ``confirmed``."""
    member = await services.lists.add_subscriber(
        list_id,
        body.email,
        name=body.name,
        attributes=body.attributes,
        optin=OptIn("api", key.name),
        confirmed=body.confirmed,
        send_confirmation=body.send_confirmation,
    )
    return subscriber_out(member)


@router.get("/lists/{list_id}/subscribers/export", response_class=Response)
async def export_subscribers(
    services: ServicesDep,
    list_id: Id,
    status: Status | None = None,
    segment: Annotated[Text | None, Query(max_length=64)] = None,
    encoding: Literal["utf-8-sig", "utf-8", "cp932"] = "utf-8-sig",
    key: ApiKeyInfo = can_read,
) -> Response:
    """Members as CSV (formula-like cells neutralised)."""
    out = io.BytesIO()
    await services.lists.export_csv(list_id, out, status=status, segment=segment, encoding=encoding)
    return Response(
        out.getvalue(),
        media_type=f"text/csv; charset={'shift_jis' if encoding == 'cp932' else 'utf-8'}",
        headers={"Content-Disposition": f'attachment; filename="list-{list_id}.csv"'},
    )


@router.post(
    "/lists/{list_id}/subscribers/import",
    response_model=ImportReportOut,
    openapi_extra=_CSV_BODY,
)
async def import_subscribers(
    services: ServicesDep,
    list_id: Id,
    request: Request,
    status: Literal["subscribed", "unconfirmed", "unsubscribed"] = "subscribed",
    encoding: Literal["utf-8", "utf-8-sig", "shift_jis", "cp932"] | None = None,
    update_existing: bool = True,
    key: ApiKeyInfo = can_send,
) -> ImportReportOut:
    """Import a CSV file (the request body, ``text/csv``); the report lists every
    refused row with its line and reason."""
    await services.lists.get_list(list_id)
    data = await request.body()
    try:
        report = await services.lists.import_csv(
            list_id,
            io.BytesIO(data),
            encoding=encoding,
            optin=OptIn("import", f"api:{key.name}"),
            status=status,
            update_existing=update_existing,
        )
    except (UnicodeError, ValueError) as exc:
        raise InputError(f"the CSV file cannot be read: {exc}") from exc
    return ImportReportOut(**report.to_dict())


async def _membership(lists: ListService, list_id: int, subscriber_id: int) -> Membership:
    return await lists.membership(list_id, subscriber_id)


@router.get("/lists/{list_id}/subscribers/{subscriber_id}", response_model=SubscriberOut)
async def show_subscriber(
    services: ServicesDep, list_id: Id, subscriber_id: Id, key: ApiKeyInfo = can_read
) -> SubscriberOut:
    """One member of the list."""
    return subscriber_out(await _membership(services.lists, list_id, subscriber_id))


@router.patch("/lists/{list_id}/subscribers/{subscriber_id}", response_model=SubscriberOut)
async def update_subscriber(
    services: ServicesDep,
    list_id: Id,
    subscriber_id: Id,
    body: SubscriberUpdate,
    key: ApiKeyInfo = can_send,
) -> SubscriberOut:
    """Change name and attributes (merged) and/or the status (recorded in the history)."""
    member = await _membership(services.lists, list_id, subscriber_id)
    if body.name is not None or body.attributes is not None:
        await services.lists.add_subscriber(
            list_id,
            member.subscriber.address,
            name=body.name,
            attributes=body.attributes,
            optin=OptIn("api", key.name),
            confirmed=member.status == "subscribed",
            send_confirmation=False,
        )
    if body.status is not None and body.status != member.status:
        await services.lists.set_status(list_id, subscriber_id, body.status, reason=body.reason)
    return subscriber_out(await _membership(services.lists, list_id, subscriber_id))


@router.delete("/lists/{list_id}/subscribers/{subscriber_id}", status_code=204)
async def delete_subscriber(
    services: ServicesDep, list_id: Id, subscriber_id: Id, key: ApiKeyInfo = can_send
) -> None:
    """Remove the membership (no consent history kept: prefer status unsubscribed)."""
    member = await _membership(services.lists, list_id, subscriber_id)
    if not await services.lists.remove_subscriber(list_id, member.subscriber.address):
        raise NotFound(f"subscriber {subscriber_id} is not on list {list_id}")


# -- segments --------------------------------------------------------------------


@router.get("/segments", response_model=Page[SegmentOut])
async def all_segments(
    services: ServicesDep,
    limit: Limit = 100,
    cursor: Cursor = None,
    offset: Offset = 0,
    key: ApiKeyInfo = can_read,
) -> Page[SegmentOut]:
    """Every saved segment, by name."""
    page = paginate(await services.lists.segments(), limit, cursor, offset)
    return Page[SegmentOut](items=[segment_out(s) for s in page.items], next=page.next)


@router.post("/segments", status_code=201, response_model=SegmentOut)
async def save_segment(
    services: ServicesDep, body: SegmentIn, key: ApiKeyInfo = can_send
) -> SegmentOut:
    """Save a new segment; 422 when the expression is invalid or the name is taken."""
    return segment_out(
        await services.lists.save_segment(body.name, body.expression, list_ref=body.list_id)
    )


@router.get("/segments/{segment_id}", response_model=SegmentOut)
async def show_segment(
    services: ServicesDep, segment_id: Id, key: ApiKeyInfo = can_read
) -> SegmentOut:
    return segment_out(await services.lists.get_segment(segment_id))


@router.put("/segments/{segment_id}", response_model=SegmentOut)
async def replace_segment(
    services: ServicesDep, segment_id: Id, body: SegmentIn, key: ApiKeyInfo = can_send
) -> SegmentOut:
    """Replace a segment's name, expression and list, in place: the id stays (422 and
    nothing changed when the expression is invalid or the name is taken)."""
    updated = await services.lists.update_segment(
        segment_id, body.name, body.expression, list_ref=body.list_id
    )
    return segment_out(updated)


@router.delete("/segments/{segment_id}", status_code=204)
async def delete_segment(services: ServicesDep, segment_id: Id, key: ApiKeyInfo = can_send) -> None:
    await services.lists.remove_segment(segment_id)


@router.get("/segments/{segment_id}/count", response_model=CountOut)
async def count_segment(
    services: ServicesDep,
    segment_id: Id,
    list_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    key: ApiKeyInfo = can_read,
) -> CountOut:
    """How many subscribed, not bounced members the segment selects now (on its own
    list, or on ``list_id`` for a segment not tied to one)."""
    segment = await services.lists.get_segment(segment_id)
    target = segment.list_id if segment.list_id is not None else list_id
    if target is None:
        raise InputError("this segment is not tied to a list: give list_id")
    return CountOut(count=await services.lists.count_audience(target, segment=segment.id))
