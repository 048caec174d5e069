"""``/api/v1``: submit messages and read their receipts."""

from __future__ import annotations

import binascii
from base64 import b64decode
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from kakitome.accounts.api_keys import ApiKeyInfo
from kakitome.errors import InputError
from kakitome.injection import Injector
from kakitome.message import Attachment
from kakitome.queue.types import NewMessage
from kakitome.receipts import receipt_to_dict
from kakitome.web.auth import require_scope
from kakitome.web.deps import ServicesDep
from kakitome.web.errors import ApiError, input_error_status


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AttachmentIn(_Model):
    filename: str
    content_type: str = "application/octet-stream"
    content_base64: str


class EnvelopeIn(_Model):
    from_: str | None = Field(default=None, alias="from")
    to: list[str] | None = None


class MessageIn(_Model):
    """Either fields (from, to, ...) or a raw RFC 5322 message (raw / raw_base64)."""

    from_: str | None = Field(default=None, alias="from")
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    reply_to: str | list[str] | None = None
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    raw: str | None = None
    raw_base64: str | None = None
    envelope: EnvelopeIn | None = None
    # RFC 8689: deliver only over verified TLS along a secure path, else bounce.
    requiretls: bool = False


class Accepted(BaseModel):
    id: str
    recipients: int


class BatchIn(_Model):
    """Up to ``http.max_batch_messages`` messages, each as for POST /messages."""

    messages: list[MessageIn] = Field(min_length=1)


class BatchAccepted(BaseModel):
    """One entry per message, in the order given."""

    messages: list[Accepted]


def _b64(value: str, what: str) -> bytes:
    try:
        return b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(422, "invalid_base64", f"{what} is not valid base64") from exc


def _prepare(injector: Injector, body: MessageIn) -> NewMessage:
    raw_given = body.raw is not None or body.raw_base64 is not None
    if raw_given:
        if body.raw is not None and body.raw_base64 is not None:
            raise ApiError(422, "invalid_request", "give raw or raw_base64, not both")
        field_names = ("from_", "to", "cc", "bcc", "reply_to", "subject", "text", "html")
        mixed = [n.rstrip("_") for n in field_names if n in body.model_fields_set]
        mixed += [n for n in ("attachments", "headers") if n in body.model_fields_set]
        if mixed:
            raise ApiError(
                422,
                "invalid_request",
                f"a raw message cannot be combined with fields ({', '.join(mixed)}); "
                "use envelope for the sender and recipients",
            )
        content = (
            body.raw.encode("utf-8")
            if body.raw is not None
            else _b64(body.raw_base64 or "", "raw_base64")
        )
        envelope = body.envelope or EnvelopeIn()
        return injector.prepare_raw(
            content,
            sender=envelope.from_,
            recipients=envelope.to,
            source="api",
            requiretls=body.requiretls,
        )
    if body.envelope is not None:
        raise ApiError(422, "invalid_request", "envelope is only for raw messages")
    if body.from_ is None:
        raise ApiError(422, "invalid_request", "from is required (or give a raw message)")
    attachments = [
        Attachment(a.filename, a.content_type, _b64(a.content_base64, f"attachment {a.filename!r}"))
        for a in body.attachments
    ]
    return injector.prepare_fields(
        from_=body.from_,
        to=body.to,
        cc=body.cc,
        bcc=body.bcc,
        reply_to=body.reply_to,
        subject=body.subject,
        text=body.text,
        html=body.html,
        attachments=attachments,
        headers=body.headers,
        source="api",
        requiretls=body.requiretls,
    )


def _prepare_batch(injector: Injector, bodies: list[MessageIn]) -> list[NewMessage]:
    """Every message of a batch prepared, or the first one's error naming its index (and
    nothing queued)."""
    prepared: list[NewMessage] = []
    for index, body in enumerate(bodies):
        try:
            message = _prepare(injector, body)
            if not message.recipients:
                raise InputError("a message needs at least one recipient")
        except ApiError as exc:
            raise ApiError(exc.status, exc.code, f"messages[{index}]: {exc.message}") from exc
        except InputError as exc:
            status, code = input_error_status(exc)
            raise ApiError(status, code, f"messages[{index}]: {exc}") from exc
        prepared.append(message)
    return prepared


router = APIRouter(prefix="/api/v1")
# Dependencies as defaults, not Annotated (as every router of the API).
can_send = Depends(require_scope("send"))
can_read = Depends(require_scope("read"))


@router.post("/messages", status_code=202, response_model=Accepted)
async def submit_message(
    body: MessageIn, services: ServicesDep, key: ApiKeyInfo = can_send
) -> Accepted:
    """Queue a message. 202 means it is committed and will be delivered."""
    injector = services.injector
    message = _prepare(injector, body)
    message_id = await injector.submit(message)
    return Accepted(id=message_id, recipients=len(message.recipients))


@router.post("/messages/batch", status_code=202, response_model=BatchAccepted)
async def submit_batch(
    body: BatchIn, services: ServicesDep, key: ApiKeyInfo = can_send
) -> JSONResponse:
    """Queue many messages in one request: all are checked first (an error names the
    message's index and nothing is queued), then committed together. 202 means every
    one is committed and will be delivered."""
    limit = services.settings.http.max_batch_messages
    if len(body.messages) > limit:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(body.messages):,} messages in one batch; the limit is {limit:,}",
        )
    injector = services.injector
    messages = _prepare_batch(injector, body.messages)
    ids = await injector.submit_many(messages)
    # The BatchAccepted shape, written directly: a model per message and the response
    # model's validation cost more than the commit.
    accepted = [
        {"id": i, "recipients": len(m.recipients)} for i, m in zip(ids, messages, strict=True)
    ]
    return JSONResponse({"messages": accepted}, status_code=202)


@router.get("/messages/{message_id}")
async def get_receipt(message_id: str, services: ServicesDep, key: ApiKeyInfo = can_read) -> Any:
    """The receipt: each recipient's status, attempts, MX, reply and TLS receipt."""
    return receipt_to_dict(await services.queue.receipt(message_id))
