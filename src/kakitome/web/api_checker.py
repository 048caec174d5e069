"""``/api/v1/checker/{domain}`` and ``/api/v1/policy/{domain}``: check a domain's receiving
side (DNS, MX probes, MTA-STS, TLS-RPT, DANE; with our sending side when the domain is one
of ours), and explain the TLS policy delivery would use for a destination.

Scopes: ``read`` (both are GETs; neither sends mail nor changes configuration - the policy
explanation may cache a discovered MTA-STS policy, as delivery would).

Bounded time: a check is cut at ``CHECK_TIMEOUT`` seconds and an explanation at
``EXPLAIN_TIMEOUT`` (504 ``timeout``); each probe is also bounded by
``checker.probe_timeout`` and DNS by ``dns.timeout``. A name that is not a domain is 422.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict

from kakitome.accounts.api_keys import ApiKeyInfo
from kakitome.errors import DeliveryError, InputError, KakitomeError
from kakitome.web.api_lists import Text
from kakitome.web.auth import require_scope
from kakitome.web.deps import ServicesDep
from kakitome.web.errors import ApiError

if TYPE_CHECKING:
    from kakitome.dns.resolver import Resolver
    from kakitome.services import Services

CHECK_TIMEOUT = 90.0
EXPLAIN_TIMEOUT = 30.0

T = TypeVar("T")

DomainPath = Annotated[Text, Path(min_length=1, max_length=253, description="a domain name")]


class CheckReportOut(BaseModel):
    """The checker's report (``kakitome check DOMAIN --json``)."""

    model_config = ConfigDict(extra="allow")

    domain: str
    grade: str | None
    grade_reason: str
    transport: str
    transport_reason: str
    protection: Any
    findings: list[dict[str, Any]]
    facts: dict[str, Any]
    sending: list[dict[str, Any]] | None = None


class PolicyOut(BaseModel):
    """The effective TLS policy per MX host (``kakitome policy explain DOMAIN --json``)."""

    model_config = ConfigDict(extra="allow")

    domain: str
    hosts: list[dict[str, Any]]
    error: str | None = None
    null_mx: bool | None = None


async def _bounded(work: Awaitable[T], seconds: float, what: str) -> T:
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError as exc:
        raise ApiError(504, "timeout", f"{what} took longer than {seconds:g} s") from exc
    except (UnicodeError, ValueError) as exc:
        raise InputError(f"not a domain name: {exc}") from exc


def _domain(name: str) -> str:
    """The name in A-labels; 422 when it is not a domain name (before any DNS work)."""
    from kakitome.dns.resolver import to_alabel

    try:
        return to_alabel(name)
    except DeliveryError as exc:
        raise InputError(f"not a domain name: {name!r}") from exc


def _resolver(services: Services) -> Resolver:
    """A resolver for one explanation (made per request, as the ``Checker`` of a check
    is; ``Services`` holds no resolver today)."""
    from kakitome.dns.resolver import Resolver

    return Resolver(services.settings.dns)


router = APIRouter(prefix="/api/v1", tags=["checker"])
can_read = Depends(require_scope("read"))


@router.get("/checker/{domain}", response_model=CheckReportOut)
async def check_domain(
    domain: DomainPath, services: ServicesDep, key: ApiKeyInfo = can_read
) -> CheckReportOut:
    """Grade a domain's receiving side; for one of our sending domains, the sending
    findings (DKIM, SPF, DMARC, PTR) too."""
    from kakitome.checker.sending import domain_service_verifier, sending_findings
    from kakitome.checker.service import Checker

    name = _domain(domain)
    settings = services.settings

    async def work() -> dict[str, Any]:
        checker = Checker(settings)
        report = await checker.check_domain(name)
        verifier = domain_service_verifier(services.domains)
        try:
            side = await sending_findings(report.domain, settings, checker.resolver, verifier)
        except KakitomeError:
            side = None
        if side is not None:
            report = replace(report, sending=tuple(side))
        document: dict[str, Any] = report.to_dict()
        return document

    return CheckReportOut(**await _bounded(work(), CHECK_TIMEOUT, "the check"))


@router.get("/policy/{domain}", response_model=PolicyOut)
async def explain_policy(
    domain: DomainPath, services: ServicesDep, key: ApiKeyInfo = can_read
) -> PolicyOut:
    """For each MX of the destination: the TLS level delivery would use now, and
    where every part came from (table, DANE, MTA-STS, history, default)."""
    from kakitome.tls.explain import explain_policy as explain

    name = _domain(domain)
    settings = services.settings
    work = explain(settings, _resolver(services), services.tls_store, name)
    document = await _bounded(work, EXPLAIN_TIMEOUT, "explain")
    return PolicyOut(**document)
