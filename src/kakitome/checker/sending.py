"""The sending side of a report: our own reverse DNS and HELO name (T39), and the findings
of the sending-domains module (``domain verify``) through a small adapter.

Talks to: DNS through the resolver (PTR of ``delivery.source_address``, A/AAAA of the PTR
name and of ``delivery.helo_hostname``); and, when it exists, the sending-domains module's
verify function, which does its own DNS work (SPF, DKIM, DMARC, return path).

Trusts: the settings for which address and HELO name we send with.

Limits: without ``delivery.source_address`` the public sending address is unknown (NAT,
several addresses), so reverse DNS is not checked and a finding says so.

The adapter (``domain_service_verifier``) calls ``DomainService.verify`` — the very
``kakitome domain verify`` — so it also records the domain's verification state, as that
command does. ``NotFound`` means "not one of our sending domains": no sending section
unless ``--sending`` asks for one. Its findings keep their own code (``domain_code``),
English and Japanese texts and remedies; the status maps to a severity: ok -> ok,
warning -> warning, missing/wrong -> error when the check is required, else warning.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kakitome.checker.dnsfacts import reverse_dns
from kakitome.checker.findings import Finding, Severity
from kakitome.config import Settings
from kakitome.dns.resolver import Resolver
from kakitome.errors import DeliveryError, NotFound

if TYPE_CHECKING:
    from kakitome.domains.service import DomainService

# An adapter returns the domain module's findings, or None when the domain is not one of
# ours (then the report has no sending section unless asked for).
SendingVerifier = Callable[[str], Awaitable[list[Finding] | None]]


async def reverse_dns_findings(settings: Settings, resolver: Resolver) -> list[Finding]:
    """T39: PTR of the sending address, forward confirmation, HELO name agreement."""
    source = settings.delivery.source_address
    helo = settings.delivery.helo_hostname.lower().rstrip(".")
    if not source:
        return [Finding("SENDING_IP_UNKNOWN", "delivery.source_address")]
    rev = await reverse_dns(resolver, source)
    names = ", ".join(rev.names) or "none"
    findings: list[Finding] = []
    if not rev.names:
        findings.append(Finding("SENDING_PTR_MISSING", source, {"helo": helo}))
    elif rev.confirmed_name is None:
        findings.append(Finding("SENDING_PTR_NOT_CONFIRMED", source, {"names": names}))
    if rev.names and helo not in rev.names:
        findings.append(
            Finding("SENDING_HELO_MISMATCH", source, {"helo": helo, "names": names})
        )
    try:
        helo_addresses = await resolver.resolve_addresses(helo)
    except DeliveryError:
        helo_addresses = ()
    if source not in helo_addresses:
        findings.append(Finding("SENDING_HELO_NO_ADDRESS", source, {"helo": helo}))
    if not findings and rev.confirmed_name:
        findings.append(Finding("SENDING_REVERSE_OK", source, {"name": rev.confirmed_name}))
    return findings


def _severity(status: str, required: bool) -> Severity:
    if status == "ok":
        return Severity.OK
    if status == "warning":
        return Severity.WARNING
    return Severity.ERROR if required else Severity.WARNING


def adapt_findings(domain: str, items: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """The domains module's findings (their ``to_dict`` form) as ``SENDING_DOMAIN``
    findings."""
    out: list[Finding] = []
    for item in items:
        message = item.get("message") or {}
        remedy = item.get("remedy") or {}
        code = str(item.get("code") or "UNKNOWN")
        out.append(
            Finding(
                "SENDING_DOMAIN",
                str(item.get("name") or domain),
                {
                    "domain_code": code,
                    "check": item.get("check"),
                    "message": message.get("en") or code,
                    "message_ja": message.get("ja") or message.get("en") or code,
                    "remedy": remedy.get("en", ""),
                    "remedy_ja": remedy.get("ja") or remedy.get("en", ""),
                },
                severity=_severity(str(item.get("status")), bool(item.get("required"))),
            )
        )
    return out


def domain_service_verifier(service: DomainService) -> SendingVerifier:
    """The adapter over ``DomainService.verify`` (None when the domain is not ours)."""

    async def verify(domain: str) -> list[Finding] | None:
        try:
            verification = await service.verify(domain)
        except NotFound:
            return None
        return adapt_findings(domain, (f.to_dict() for f in verification.findings))

    return verify


async def sending_findings(
    domain: str,
    settings: Settings,
    resolver: Resolver,
    verifier: SendingVerifier | None,
    *,
    force: bool = False,
) -> list[Finding] | None:
    """The sending section: None when the domain is not ours and ``force`` is off."""
    domain_findings: list[Finding] | None = None
    if verifier is not None:
        try:
            domain_findings = await verifier(domain)
        except Exception as exc:  # the sending side must not break the receiving report
            domain_findings = [
                Finding("SENDING_SIDE_UNAVAILABLE", domain, {"error": f"{exc}"[:300]})
            ]
    if domain_findings is None and not force:
        return None
    out = await reverse_dns_findings(settings, resolver)
    if domain_findings is None:
        why = "the sending-domains module is not available" if verifier is None else (
            "it is not a configured sending domain"
        )
        out.append(Finding("SENDING_SIDE_UNAVAILABLE", domain, {"error": why}))
    else:
        out.extend(domain_findings)
    return out
