"""``/api/v1/domains``: sending domains - add, list, show with the DNS records to publish,
verify, rotate the DKIM keys, delete.

Scopes: ``read`` for GETs; ``admin`` for every change (add, verify, rotate-dkim, delete) -
sending domains are configuration. A domain is named in the path by its name (IDN in
either form); 404 when it is not a sending domain, 422 for a name that is not one.

Bounded time: ``verify`` queries DNS (``dns.timeout``) and is cut at ``VERIFY_TIMEOUT``
seconds (504 ``dns_timeout``); a DNS server that does not answer gives 503
``dns_unavailable`` and leaves the recorded state as it was.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from kakitome.accounts.api_keys import ApiKeyInfo
from kakitome.domains.keybox import KeyBoxError
from kakitome.domains.service import DomainService, DomainView
from kakitome.domains.verify import DomainDNSError
from kakitome.web.api_lists import Cursor, Limit, Model, Offset, Page, Text, paginate
from kakitome.web.auth import require_scope
from kakitome.web.deps import ServicesDep
from kakitome.web.errors import ApiError

VERIFY_TIMEOUT = 30.0

DomainPath = Annotated[Text, Path(min_length=1, max_length=253, description="the domain name")]


class DkimRecord(BaseModel):
    name: str
    value: str


class DkimKeyOut(BaseModel):
    selector: str
    type: str
    state: str
    created_at: str | None
    activated_at: str | None
    retire_at: str | None
    record: DkimRecord


class DomainOut(BaseModel):
    domain: str
    unicode: str
    return_path: str
    state: str
    created_at: str | None
    verified_at: str | None
    signing_selectors: list[str]
    keys: list[DkimKeyOut]
    failing: list[str]


class PublishRecordOut(BaseModel):
    purpose: str
    name: str
    type: str
    value: str
    required: bool
    note: dict[str, str]
    selector: str | None = None
    key_state: str | None = None


class PtrOut(BaseModel):
    ip: str
    name: str
    value: str


class AdviceOut(BaseModel):
    code: str
    en: str
    ja: str


class RecordsOut(BaseModel):
    domain: str
    unicode: str
    return_path: str
    records: list[PublishRecordOut]
    ptr: list[PtrOut]
    advice: list[AdviceOut]
    zone_file: str


class DomainDetail(DomainOut):
    dns: RecordsOut


class FindingOut(BaseModel):
    check: str
    code: str
    status: str
    required: bool
    name: str | None
    expected: Any = None
    found: list[Any]
    message: dict[str, str]
    remedy: dict[str, str] | None


class VerificationOut(BaseModel):
    domain: str
    unicode: str
    state: str
    checked_at: float
    summary: dict[str, int]
    findings: list[FindingOut]


class DomainIn(Model):
    domain: Text = Field(min_length=1, max_length=253, description="e.g. example.jp or 例え.jp")


router = APIRouter(prefix="/api/v1", tags=["domains"])
can_read = Depends(require_scope("read"))
can_admin = Depends(require_scope("admin"))


def out(view: DomainView) -> DomainOut:
    return DomainOut(**view.to_dict())


async def detail(domains: DomainService, view: DomainView) -> DomainDetail:
    records = await domains.records(view.name.ascii)
    return DomainDetail(**view.to_dict(), dns=RecordsOut(**records.to_dict()))


@router.get("/domains", response_model=Page[DomainOut])
async def list_domains(
    services: ServicesDep,
    limit: Limit = 100,
    cursor: Cursor = None,
    offset: Offset = 0,
    key: ApiKeyInfo = can_read,
) -> Page[DomainOut]:
    """The sending domains and their state."""
    page = paginate(await services.domains.list_domains(), limit, cursor, offset)
    return Page[DomainOut](items=[out(v) for v in page.items], next=page.next)


@router.post("/domains", status_code=201, response_model=DomainDetail)
async def add_domain(
    body: DomainIn, services: ServicesDep, key: ApiKeyInfo = can_admin
) -> DomainDetail:
    """Add a sending domain: new DKIM keys (RSA + Ed25519) and the records to publish."""
    domains = services.domains
    try:
        view = await domains.add(body.domain)
    except KeyBoxError as exc:
        raise ApiError(503, "not_configured", f"the key box is not usable: {exc}") from exc
    return await detail(domains, view)


@router.get("/domains/{domain}", response_model=DomainDetail)
async def show_domain(
    domain: DomainPath, services: ServicesDep, key: ApiKeyInfo = can_read
) -> DomainDetail:
    """One domain with the DNS records to publish (zone file included)."""
    domains = services.domains
    return await detail(domains, await domains.show(domain))


@router.post("/domains/{domain}/verify", response_model=VerificationOut)
async def verify_domain(
    domain: DomainPath,
    services: ServicesDep,
    key: ApiKeyInfo = can_admin,
) -> VerificationOut:
    """Query DNS now and judge every record (each failure with its remedy); the state
    is recorded."""
    domains = services.domains
    await domains.show(domain)  # 404 before any DNS work
    try:
        result = await asyncio.wait_for(domains.verify(domain), VERIFY_TIMEOUT)
    except TimeoutError as exc:
        raise ApiError(504, "dns_timeout", "DNS did not answer in time") from exc
    except DomainDNSError as exc:
        raise ApiError(503, "dns_unavailable", str(exc), {"Retry-After": "30"}) from exc
    return VerificationOut(**result.to_dict())


@router.post("/domains/{domain}/rotate-dkim", response_model=DomainDetail)
async def rotate_dkim(
    domain: DomainPath, services: ServicesDep, key: ApiKeyInfo = can_admin
) -> DomainDetail:
    """Make new DKIM keys, pending until a verification sees them published."""
    domains = services.domains
    try:
        view = await domains.rotate_dkim(domain)
    except KeyBoxError as exc:
        raise ApiError(503, "not_configured", f"the key box is not usable: {exc}") from exc
    return await detail(domains, view)


@router.delete("/domains/{domain}", status_code=204)
async def delete_domain(
    domain: DomainPath, services: ServicesDep, key: ApiKeyInfo = can_admin
) -> None:
    """Remove a sending domain and its keys (mail from it is no longer signed)."""
    await services.domains.remove(domain)
