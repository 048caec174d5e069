"""``/api/v1/campaigns`` and ``/api/v1/sequences``: campaigns (CRUD, preview, test send,
schedule, send, pause, resume, cancel, statistics) and step mail (sequences: create,
edit - name, pause/reactivate, tracking, footer - and delete; their steps).

Thin over ``CampaignService``: every route calls a service method, none the store.

Scopes: ``read`` for GETs (and the preview, a POST that changes nothing); ``send`` for
everything else here - editing campaigns and sequences, test sends, scheduling and sending.

A campaign is named in the path by its id. 404 for an unknown campaign, sequence or step;
422 for invalid input, including a template that does not compile and a state change the
campaign's status does not allow (e.g. pausing a draft).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from kakitome.accounts.api_keys import ApiKeyInfo
from kakitome.campaigns.store import CampaignRow, NewStep, SequenceRow, StepRow
from kakitome.errors import InputError
from kakitome.receipts import iso_utc
from kakitome.web.api_lists import MAX_ID, Cursor, Id, Limit, Model, Offset, Page, Text, paginate
from kakitome.web.auth import require_scope
from kakitome.web.deps import ServicesDep

BodyFormat = Literal["html", "markdown", "text"]
_TIMES = ("scheduled_at", "next_run_at", "created_at", "updated_at", "started_at", "finished_at")


class CampaignOut(BaseModel):
    id: int
    name: str
    list_id: int
    segment: str | None
    expression: str | None
    subject: str
    body: str
    body_format: str
    text: str | None
    tracking: bool
    footer: bool
    status: str
    scheduled_at: str | None
    next_run_at: str | None
    checkpoint: int
    sent: int
    failed: int
    created_at: str | None
    updated_at: str | None
    started_at: str | None
    finished_at: str | None
    error: str | None


class CampaignIn(Model):
    name: Text = Field(min_length=1, max_length=200)
    list_id: int = Field(ge=1, le=MAX_ID)
    subject: Text = Field(default="", max_length=998)
    body: Text = Field(default="", max_length=1_000_000)
    body_format: BodyFormat = "html"
    text: Text | None = Field(default=None, max_length=1_000_000)
    segment: Text | None = Field(default=None, max_length=64)
    expression: Text | None = Field(default=None, max_length=10_000)
    tracking: bool | None = None
    footer: bool = True


class CampaignUpdate(Model):
    name: Text | None = Field(default=None, min_length=1, max_length=200)
    subject: Text | None = Field(default=None, max_length=998)
    body: Text | None = Field(default=None, max_length=1_000_000)
    body_format: BodyFormat | None = None
    text: Text | None = Field(default=None, max_length=1_000_000)
    segment: Text | None = Field(default=None, max_length=64)
    expression: Text | None = Field(default=None, max_length=10_000)
    tracking: bool | None = None
    footer: bool | None = None


class PreviewOut(BaseModel):
    subject: str
    text: str | None
    html: str | None
    raw: str
    lost_characters: list[str]


class TestSendIn(Model):
    to: list[Text] = Field(min_length=1, max_length=10)
    subscriber: int | None = Field(default=None, ge=1, le=MAX_ID)


class TestSendOut(BaseModel):
    message_ids: list[str]


class ScheduleIn(Model):
    at: float = Field(ge=0, le=1e11, description="epoch seconds")


class StatsOut(BaseModel):
    campaign_id: int
    name: str
    status: str
    sent: int
    failed: int
    queued: int
    delivered: int
    deferred: int
    bounced: int
    held: int
    opened: int
    opened_total: int
    clicked: int
    clicked_total: int
    unsubscribed: int | None
    verified_tls: int
    verified_tls_share: float | None


class SequenceIn(Model):
    name: Text = Field(min_length=1, max_length=200)
    list_id: int = Field(ge=1, le=MAX_ID)
    tracking: bool | None = None
    footer: bool = True


class SequenceUpdate(Model):
    name: Text | None = Field(default=None, min_length=1, max_length=200)
    status: Literal["active", "paused"] | None = None
    tracking: bool | None = None
    footer: bool | None = None


class StepOut(BaseModel):
    id: int
    sequence_id: int
    position: int
    delay_days: int
    send_hour: int | None
    subject: str
    body: str
    body_format: str
    text: str | None
    created_at: str | None
    updated_at: str | None
    removed_at: str | None


class SequenceOut(BaseModel):
    id: int
    name: str
    list_id: int
    status: str
    tracking: bool
    footer: bool
    starts_at: str | None
    created_at: str | None
    updated_at: str | None
    steps: list[StepOut] | None = None


class StepIn(Model):
    delay_days: int = Field(ge=0, le=3650)
    subject: Text = Field(max_length=998)
    body: Text = Field(max_length=1_000_000)
    body_format: BodyFormat = "html"
    text: Text | None = Field(default=None, max_length=1_000_000)
    send_hour: int | None = Field(default=None, ge=0, le=23)
    position: int | None = Field(default=None, ge=1, le=10_000)


class StepUpdate(Model):
    delay_days: int | None = Field(default=None, ge=0, le=3650)
    subject: Text | None = Field(default=None, max_length=998)
    body: Text | None = Field(default=None, max_length=1_000_000)
    body_format: BodyFormat | None = None
    text: Text | None = Field(default=None, max_length=1_000_000)
    send_hour: int | None = Field(default=None, ge=0, le=23)


def campaign_out(row: CampaignRow) -> CampaignOut:
    data: dict[str, Any] = row.to_dict()
    for name in _TIMES:
        data[name] = iso_utc(data[name])
    return CampaignOut(**data)


def step_out(row: StepRow) -> StepOut:
    data: dict[str, Any] = row.to_dict()
    data.pop("watermark", None)
    for name in ("created_at", "updated_at", "removed_at"):
        data[name] = iso_utc(data[name])
    return StepOut(**data)


def sequence_out(row: SequenceRow, steps: list[StepRow] | None = None) -> SequenceOut:
    data: dict[str, Any] = row.to_dict()
    for name in ("starts_at", "created_at", "updated_at"):
        data[name] = iso_utc(data[name])
    return SequenceOut(**data, steps=None if steps is None else [step_out(s) for s in steps])


router = APIRouter(prefix="/api/v1", tags=["campaigns"])
can_read = Depends(require_scope("read"))
can_send = Depends(require_scope("send"))


# -- campaigns -------------------------------------------------------------------


@router.get("/campaigns", response_model=Page[CampaignOut])
async def list_campaigns(
    services: ServicesDep,
    status: Annotated[
        Literal["draft", "scheduled", "sending", "paused", "finished", "cancelled"] | None,
        Query(),
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    offset: Offset = 0,
    key: ApiKeyInfo = can_read,
) -> Page[CampaignOut]:
    """Campaigns, oldest first; filter by ``status``."""
    page = paginate(await services.campaigns.campaigns(status=status), limit, cursor, offset)
    return Page[CampaignOut](items=[campaign_out(r) for r in page.items], next=page.next)


@router.post("/campaigns", status_code=201, response_model=CampaignOut)
async def create_campaign(
    services: ServicesDep, body: CampaignIn, key: ApiKeyInfo = can_send
) -> CampaignOut:
    """A draft campaign; the template and the list's sender identity are checked now."""
    row = await services.campaigns.create(
        body.name,
        body.list_id,
        subject=body.subject,
        body=body.body,
        body_format=body.body_format,
        text=body.text,
        segment=body.segment,
        expression=body.expression,
        tracking=body.tracking,
        footer=body.footer,
    )
    return campaign_out(row)


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut)
async def show_campaign(
    services: ServicesDep, campaign_id: Id, key: ApiKeyInfo = can_read
) -> CampaignOut:
    return campaign_out(await services.campaigns.get(campaign_id))


@router.patch("/campaigns/{campaign_id}", response_model=CampaignOut)
async def update_campaign(
    services: ServicesDep, campaign_id: Id, body: CampaignUpdate, key: ApiKeyInfo = can_send
) -> CampaignOut:
    """Edit a draft or scheduled campaign (the result must still compile and pass the
    list's checks; a broken edit leaves the campaign as it was)."""
    values = body.model_dump(exclude_unset=True)
    return campaign_out(await services.campaigns.update(campaign_id, **values))


@router.delete("/campaigns/{campaign_id}", status_code=204)
async def delete_campaign(
    services: ServicesDep, campaign_id: Id, key: ApiKeyInfo = can_send
) -> None:
    """Delete a draft or cancelled campaign (422 otherwise: cancel it first)."""
    await services.campaigns.delete(campaign_id)


@router.post("/campaigns/{campaign_id}/preview", response_model=PreviewOut)
async def preview(
    services: ServicesDep,
    campaign_id: Id,
    subscriber: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    key: ApiKeyInfo = can_read,
) -> PreviewOut:
    """The message as ``subscriber`` (an id) would get it, or as a blank subscriber."""
    return PreviewOut(**(await services.campaigns.preview(campaign_id, subscriber)).to_dict())


@router.post("/campaigns/{campaign_id}/test", response_model=TestSendOut)
async def test_send(
    services: ServicesDep, campaign_id: Id, body: TestSendIn, key: ApiKeyInfo = can_send
) -> TestSendOut:
    """Send the campaign, marked [TEST] and untracked, to the given addresses."""
    ids = await services.campaigns.test_send(campaign_id, body.to, subscriber=body.subscriber)
    return TestSendOut(message_ids=ids)


@router.post("/campaigns/{campaign_id}/schedule", response_model=CampaignOut)
async def schedule(
    services: ServicesDep, campaign_id: Id, body: ScheduleIn, key: ApiKeyInfo = can_send
) -> CampaignOut:
    """配信予約: send at ``at`` (a draft only; validated now)."""
    return campaign_out(await services.campaigns.schedule(campaign_id, body.at))


@router.post("/campaigns/{campaign_id}/send", response_model=CampaignOut)
async def send_now(
    services: ServicesDep, campaign_id: Id, key: ApiKeyInfo = can_send
) -> CampaignOut:
    """Start sending at the runner's next pass (a draft only; validated now)."""
    return campaign_out(await services.campaigns.send_now(campaign_id))


@router.post("/campaigns/{campaign_id}/pause", response_model=CampaignOut)
async def pause(services: ServicesDep, campaign_id: Id, key: ApiKeyInfo = can_send) -> CampaignOut:
    return campaign_out(await services.campaigns.pause(campaign_id))


@router.post("/campaigns/{campaign_id}/resume", response_model=CampaignOut)
async def resume(services: ServicesDep, campaign_id: Id, key: ApiKeyInfo = can_send) -> CampaignOut:
    return campaign_out(await services.campaigns.resume(campaign_id))


@router.post("/campaigns/{campaign_id}/cancel", response_model=CampaignOut)
async def cancel(services: ServicesDep, campaign_id: Id, key: ApiKeyInfo = can_send) -> CampaignOut:
    """Stop for good; messages already queued stay queued."""
    return campaign_out(await services.campaigns.cancel(campaign_id))


@router.get("/campaigns/{campaign_id}/stats", response_model=StatsOut)
async def stats(services: ServicesDep, campaign_id: Id, key: ApiKeyInfo = can_read) -> StatsOut:
    """Sent, delivery outcomes, opens, clicks, unsubscribes, verified-TLS share."""
    return StatsOut(**(await services.campaigns.stats(campaign_id)).to_dict())


# -- sequences (step mail) -------------------------------------------------------


@router.get("/sequences", response_model=Page[SequenceOut])
async def list_sequences(
    services: ServicesDep,
    limit: Limit = 100,
    cursor: Cursor = None,
    offset: Offset = 0,
    key: ApiKeyInfo = can_read,
) -> Page[SequenceOut]:
    page = paginate(await services.campaigns.sequences(), limit, cursor, offset)
    return Page[SequenceOut](items=[sequence_out(s) for s in page.items], next=page.next)


@router.post("/sequences", status_code=201, response_model=SequenceOut)
async def create_sequence(
    services: ServicesDep, body: SequenceIn, key: ApiKeyInfo = can_send
) -> SequenceOut:
    """A sequence on a list: subscribers confirmed from now on enter it at step 1."""
    row = await services.campaigns.create_sequence(
        body.name, body.list_id, tracking=body.tracking, footer=body.footer
    )
    return sequence_out(row, [])


@router.get("/sequences/{sequence_id}", response_model=SequenceOut)
async def show_sequence(
    services: ServicesDep, sequence_id: Id, key: ApiKeyInfo = can_read
) -> SequenceOut:
    row = await services.campaigns.get_sequence(sequence_id)
    return sequence_out(row, await services.campaigns.steps(row.id))


@router.patch("/sequences/{sequence_id}", response_model=SequenceOut)
async def update_sequence(
    services: ServicesDep, sequence_id: Id, body: SequenceUpdate, key: ApiKeyInfo = can_send
) -> SequenceOut:
    """Rename, pause (``status: paused``) or reactivate (``active``: steps that fell
    due meanwhile go out at the next pass), or change tracking or footer."""
    values = body.model_dump(exclude_unset=True)
    null = sorted(k for k, v in values.items() if v is None)
    if null:
        raise InputError(f"{', '.join(null)} cannot be null")
    row = await services.campaigns.update_sequence(sequence_id, **values)
    return sequence_out(row, await services.campaigns.steps(row.id))


@router.delete("/sequences/{sequence_id}", status_code=204)
async def delete_sequence(
    services: ServicesDep, sequence_id: Id, key: ApiKeyInfo = can_send
) -> None:
    """Delete a sequence and its steps; messages already queued stay queued."""
    await services.campaigns.remove_sequence(sequence_id)


@router.post("/sequences/{sequence_id}/steps", status_code=201, response_model=StepOut)
async def add_step(
    services: ServicesDep, sequence_id: Id, body: StepIn, key: ApiKeyInfo = can_send
) -> StepOut:
    """Add a step (checked first), ``delay_days`` after confirmation."""
    step = NewStep(**body.model_dump())
    return step_out(await services.campaigns.add_step(sequence_id, step))


@router.patch("/sequences/{sequence_id}/steps/{step_id}", response_model=StepOut)
async def update_step(
    services: ServicesDep,
    sequence_id: Id,
    step_id: Id,
    body: StepUpdate,
    key: ApiKeyInfo = can_send,
) -> StepOut:
    """Edit a step; subscribers who already got it do not get it again."""
    await services.campaigns.step(sequence_id, step_id)
    values = {k: v for k, v in body.model_dump(exclude_unset=True).items()}
    for name in ("delay_days", "subject", "body", "body_format"):
        if name in values and values[name] is None:
            raise InputError(f"{name} cannot be null")
    if not values:
        return step_out(await services.campaigns.step(sequence_id, step_id))
    return step_out(await services.campaigns.update_step(step_id, **values))


@router.delete("/sequences/{sequence_id}/steps/{step_id}", status_code=204)
async def delete_step(
    services: ServicesDep, sequence_id: Id, step_id: Id, key: ApiKeyInfo = can_send
) -> None:
    await services.campaigns.step(sequence_id, step_id)
    await services.campaigns.remove_step(step_id)
