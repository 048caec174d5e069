"""A domain's report: its facts, its findings, its grade, and how mail to it would travel.

The grade (docs/CHECKER.md, "How the grade is computed"):

* **F** — a ``critical`` finding: mail cannot be delivered, or travels in plaintext on
  some MX (no STARTTLS, handshake failure), or senders that honour DANE/MTA-STS refuse it;
* **D** — an ``error`` finding: encrypted, but the certificate cannot be verified (expired,
  self-signed, wrong name, untrusted, weak key), no modern TLS, or a broken MTA-STS policy;
* **C** — a ``warning`` finding: verified TLS with weaknesses (TLS 1.0/1.1 still accepted,
  certificate about to expire, weak cipher, insecure TLSA, implicit MX, ...);
* **B** — no warning or worse, but nothing stops a downgrade (no enforced MTA-STS and no
  DANE on every MX);
* **A** — as B, and every MX is protected against downgrade: MTA-STS in enforce mode
  consistent with the MX set, or DNSSEC-validated TLSA records matching every MX.

A null MX domain gets no grade (``None``): it accepts no mail by design.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kakitome.checker.checks import dane_protected
from kakitome.checker.facts import AddressProbe, DomainFacts
from kakitome.checker.findings import Finding, Severity, worst


class Transport(StrEnum):
    """How a message to the domain would travel with Kakitome's default policy (``may``)."""

    VERIFIED = "verified"  # TLS, certificate verified for the MX name (or DANE match)
    ENCRYPTED = "encrypted"  # TLS, certificate not verified
    PLAINTEXT = "plaintext"  # no STARTTLS, or the handshake fails (delivery falls back)
    UNDELIVERABLE = "undeliverable"  # no such domain, null MX, no host answers, DNS fails


def delivery_probe(facts: DomainFacts) -> AddressProbe | None:
    """The address delivery would use: the first reachable one, by MX preference."""
    for host in facts.hosts:
        for probe in host.probes:
            if probe.reachable and probe.banner_code == 220 and probe.error is None:
                return probe
    return None


def transport(facts: DomainFacts) -> tuple[Transport, str]:
    """The transport class of mail to this domain, and the reason in a few words."""
    if not facts.exists:
        return Transport.UNDELIVERABLE, "domain does not exist"
    if facts.dns_error:
        return Transport.UNDELIVERABLE, "DNS failure"
    if facts.null_mx:
        return Transport.UNDELIVERABLE, "null MX"
    if not any(h.addresses for h in facts.hosts):
        return Transport.UNDELIVERABLE, "no MX host has an address"
    probe = delivery_probe(facts)
    if probe is None:
        return Transport.UNDELIVERABLE, "no MX host reachable"
    if not probe.starttls_offered:
        return Transport.PLAINTEXT, "STARTTLS not offered"
    if not probe.tls_ok:
        return Transport.PLAINTEXT, "TLS handshake fails"
    host = next(h for h in facts.hosts if h.name == probe.host)
    if dane_protected(host):
        return Transport.VERIFIED, "DANE"
    if probe.chain_verified and probe.name_matched:
        return Transport.VERIFIED, "certificate verified"
    if not probe.chain_verified:
        return Transport.ENCRYPTED, "certificate not trusted"
    return Transport.ENCRYPTED, "certificate name does not match"


def downgrade_protection(facts: DomainFacts) -> dict[str, bool]:
    """Which downgrade defences cover the domain: MTA-STS (enforce or testing) and DANE."""
    sts = facts.mta_sts
    has_sts = bool(
        sts and sts.mode in ("enforce", "testing") and not (sts.fetch_error or sts.policy_error)
    )
    dane = bool(facts.hosts) and all(dane_protected(h) for h in facts.hosts if h.probes)
    return {
        "mta_sts": has_sts,
        "mta_sts_enforce": has_sts and sts is not None and sts.mode == "enforce",
        "dane": dane,
    }


def grade(facts: DomainFacts, findings: list[Finding]) -> tuple[str | None, str]:
    """The letter (None for a null MX) and the reason for it."""
    if facts.null_mx:
        return None, "the domain accepts no mail (null MX)"
    level = worst(findings)
    codes = sorted({f.code for f in findings if f.effective_severity is level})
    if level is Severity.CRITICAL:
        return "F", "critical: " + ", ".join(codes)
    if level is Severity.ERROR:
        return "D", "error: " + ", ".join(codes)
    if level is Severity.WARNING:
        return "C", "warning: " + ", ".join(codes)
    protection = downgrade_protection(facts)
    if protection["mta_sts_enforce"] and any(f.code == "MTA_STS_ENFORCED" for f in findings):
        return "A", "verified TLS, protected by MTA-STS (enforce)"
    if protection["dane"]:
        return "A", "verified TLS, protected by DANE"
    return "B", "verified TLS, but no downgrade protection (no enforced MTA-STS, no DANE)"


@dataclass(frozen=True, slots=True)
class DomainReport:
    """One domain's report; ``sending`` holds the sending side when it was checked."""

    facts: DomainFacts
    findings: tuple[Finding, ...]
    sending: tuple[Finding, ...] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return self.facts.domain

    @property
    def grade(self) -> tuple[str | None, str]:
        return grade(self.facts, list(self.findings))

    @property
    def transport(self) -> tuple[Transport, str]:
        return transport(self.facts)

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def to_dict(self) -> dict[str, Any]:
        letter, why = self.grade
        kind, reason = self.transport
        out: dict[str, Any] = {
            "domain": self.domain,
            "grade": letter,
            "grade_reason": why,
            "transport": kind.value,
            "transport_reason": reason,
            "protection": downgrade_protection(self.facts),
            "findings": [f.to_dict() for f in self.findings],
            "facts": self.facts.to_dict(),
        }
        if self.sending is not None:
            out["sending"] = [f.to_dict() for f in self.sending]
        out.update(self.extras)
        return out
