"""The effective TLS policy of a destination, per MX host, and where each part came from.

Talks to: the DNS resolver (through ``tls.dane`` and ``tls.mta_sts``), the MTA-STS
policy hosts (``tls.mta_sts``), and the TLS state store (MTA-STS cache, host history).

Trusts, in this order (first that applies wins, per MX host):

1. the operator's table (``settings.tls.policy``): an entry other than ``dane`` /
   ``dane-only`` is final — no DANE, no MTA-STS, no history;
2. DANE (T12-T18), when the table or default says ``dane``/``dane-only``, or when
   ``settings.dane.enabled`` and the resolver is trusted (``settings.dns.trust_ad``):
   usable TLSA → level ``dane`` (``dane-only`` stays ``dane-only``, T45; must match;
   found securely; TLS mandatory, RFC 7672 §2.2); TLSA present but unusable
   → ``encrypt``; TLSA lookup failed → the host is skipped (defer, T15); securely no TLSA
   or insecure → next source. DANE wins over MTA-STS for that MX (T25);
3. MTA-STS (T19-T24) when ``settings.mta_sts.enabled``: ``enforce`` → hosts not matching
   an ``mx`` pattern are skipped and the others need a verified certificate for their
   name (``verify``; found securely); ``testing`` → the default level, failures are only
   reported; ``none`` → nothing;
4. history: an opportunistic host that offered STARTTLS (or showed a verified
   certificate) within ``settings.stripping.window`` is expected to do so again;
5. the default level.

``DestinationPolicy.relaxed`` is the policy for a message with ``TLS-Required: No``
(RFC 8689 §5): opportunistic everywhere, no host skipped, no expectations (T30).

Limits: DANE lookups for all MX hosts run concurrently (at most ``MAX_MX_HOSTS`` of
them, the resolver's bound).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kakitome.config import Settings
from kakitome.dns.resolver import Resolver
from kakitome.dns.types import MXResult
from kakitome.smtp.replies import Reply
from kakitome.tls.dane import DaneLookup, DaneStatus, TLSARecord, lookup_tlsa
from kakitome.tls.history import HostHistory
from kakitome.tls.mta_sts import MtaStsDiscovery, StsMode, StsOutcome
from kakitome.tls.policy import PolicySource, TLSLevel, TLSPolicy, resolve_tls_policy
from kakitome.tls.state import TLSState
from kakitome.tls.tlsrpt import (
    DANE_REQUIRED,
    DNSSEC_INVALID,
    POLICY_NONE,
    POLICY_STS,
    POLICY_TLSA,
    VALIDATION_FAILURE,
    ReportPolicy,
)


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of the explanation: what was decided, by which source, and why."""

    what: str
    source: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"what": self.what, "source": self.source, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The policy for one MX host."""

    mx_host: str
    level: TLSLevel
    source: PolicySource
    report: ReportPolicy
    match_names: tuple[str, ...] = ()
    tlsa: tuple[TLSARecord, ...] = ()  # usable records, when level is dane / dane-only
    sni: str | None = None  # the TLSA base domain, when level is dane
    skip: Reply | None = None  # do not use this host: the reason (a 4.7.x deferral)
    skip_result: str | None = None  # its RFC 8460 result type
    skip_reason_code: str = ""
    secure: bool = False  # found securely (DANE or MTA-STS enforce): REQUIRETLS may use it
    sts_testing: bool = False  # MTA-STS testing: report failures, deliver anyway
    sts_mismatch: bool = False  # (testing) the host is not in the policy's mx list
    sts_failure: str | None = None  # discovery failed: the result type to report
    history: HostHistory | None = None  # expectations for stripping detection
    # When this host has no history of its own: the history of another MX host of the
    # same destination (a backup MX must not be the way around stripping detection).
    sibling_history: HostHistory | None = None
    explanation: tuple[Part, ...] = ()

    @property
    def pool_mode(self) -> str:
        """What a pooled connection must have been opened under to be reused here."""
        tlsa = hashlib.sha256("|".join(r.to_text() for r in self.tlsa).encode()).hexdigest()[:16]
        # Table, default and history share connections: history only adds checks made
        # when a connection is opened (and the agent drops pooled plaintext ones).
        shared = (PolicySource.TABLE, PolicySource.DEFAULT, PolicySource.HISTORY)
        return "|".join(
            (
                self.level.value,
                "" if self.source in shared else self.source.value,
                ",".join(self.match_names),
                self.sni or "",
                tlsa if self.tlsa else "",
                "secure" if self.secure else "",
                "testing" if self.sts_testing else "",
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mx_host": self.mx_host,
            "level": self.level.value,
            "source": self.source.value,
            "match_names": list(self.match_names),
            "tlsa": [r.to_text() for r in self.tlsa],
            "sni": self.sni,
            "skip": str(self.skip) if self.skip else None,
            "secure": self.secure,
            "sts_testing": self.sts_testing,
            "tlsrpt_policy_type": self.report.type,
            "explanation": [p.to_dict() for p in self.explanation],
        }


def _with_siblings(hosts: dict[str, HostPolicy]) -> dict[str, HostPolicy]:
    """Give each opportunistic host without a history of its own the most recent one of
    the destination's other hosts (``HostPolicy.sibling_history``): after verified TLS to
    the first MX, stripping both it and the backup MX must not get plaintext through the
    backup (T44 per destination, not per host only)."""
    known = [hp.history for hp in hosts.values() if hp.history is not None]
    if not known:
        return hosts
    latest = max(known, key=lambda h: max(h.starttls_seen_at or 0.0, h.verified_seen_at or 0.0))
    return {
        name: replace(hp, sibling_history=latest)
        if hp.history is None and hp.level is TLSLevel.MAY
        else hp
        for name, hp in hosts.items()
    }


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    domain: str
    base: TLSPolicy
    sts: StsOutcome | None
    hosts: Mapping[str, HostPolicy]
    notes: tuple[str, ...] = ()

    def host(self, name: str) -> HostPolicy:
        found = self.hosts.get(name)
        if found is not None:
            return found
        # A host we did not resolve for (should not happen): the base policy, no extras.
        return HostPolicy(
            name,
            TLSLevel.MAY if self.base.level is TLSLevel.DANE else self.base.level,
            self.base.source,
            ReportPolicy(self.domain),
            self.base.match_names,
        )

    def relaxed(self) -> DestinationPolicy:
        """The policy for a message with ``TLS-Required: No`` (T30)."""
        hosts = {
            name: HostPolicy(
                name,
                TLSLevel.MAY,
                PolicySource.HEADER,
                hp.report,
                explanation=(
                    *hp.explanation,
                    Part("level may", PolicySource.HEADER.value, "TLS-Required: No (RFC 8689)"),
                ),
            )
            for name, hp in self.hosts.items()
        }
        return replace(self, hosts=hosts)

    def to_dict(self) -> dict[str, Any]:
        sts = self.sts
        return {
            "domain": self.domain,
            "base": {"level": self.base.level.value, "source": self.base.source.value},
            "mta_sts": None
            if sts is None
            else {
                "how": sts.how,
                "note": sts.note,
                "failure": sts.failure,
                "mode": sts.policy.mode.value if sts.policy else None,
                "mx": list(sts.policy.mx) if sts.policy else [],
                "max_age": sts.policy.max_age if sts.policy else None,
                "id": sts.policy.policy_id if sts.policy else None,
                "expires_at": sts.expires_at,
            },
            "hosts": [hp.to_dict() for hp in self.hosts.values()],
            "notes": list(self.notes),
        }


@dataclass
class PolicyResolver:
    """Resolves ``DestinationPolicy`` objects; one per process, shared by batches."""

    settings: Settings
    resolver: Resolver
    state: TLSState
    clock: Callable[[], float] = time.time
    discovery: MtaStsDiscovery = field(init=False)

    def __post_init__(self) -> None:
        self.discovery = MtaStsDiscovery(
            self.settings.mta_sts, self.settings.tls, self.resolver, self.state, self.clock
        )

    async def resolve(self, domain: str, mx: MXResult) -> DestinationPolicy:
        settings = self.settings
        base = resolve_tls_policy(domain, settings.tls.policy, settings.tls.default_level)
        dane_level = base.level in (TLSLevel.DANE, TLSLevel.DANE_ONLY)
        final_table = base.source is PolicySource.TABLE and not dane_level
        use_dane = dane_level or (
            not final_table and settings.dane.enabled and settings.dns.trust_ad
        )
        use_sts = not final_table and settings.mta_sts.enabled
        notes: list[str] = []
        if final_table:
            notes.append(f"table entry for {domain} is final: DANE and MTA-STS not consulted")
        if dane_level and not settings.dns.trust_ad:
            notes.append("dns.trust_ad is off: no TLSA answer can be trusted")
        sts = await self.discovery.discover(domain) if use_sts else None
        lookups: dict[str, DaneLookup] = {}
        if use_dane and mx.hosts:
            found = await asyncio.gather(*(lookup_tlsa(self.resolver, h.name) for h in mx.hosts))
            lookups = {h.name: f for h, f in zip(mx.hosts, found, strict=True)}
        histories: dict[str, HostHistory | None] = {}
        if settings.stripping.enabled and not final_table:
            for h in mx.hosts:
                histories[h.name] = await self.state.get_host_history(h.name)
        hosts = {
            h.name: self._host(
                domain, h.name, base, sts, lookups.get(h.name), histories.get(h.name)
            )
            for h in mx.hosts
        }
        return DestinationPolicy(domain, base, sts, _with_siblings(hosts), tuple(notes))

    def _host(
        self,
        domain: str,
        name: str,
        base: TLSPolicy,
        sts: StsOutcome | None,
        lookup: DaneLookup | None,
        history: HostHistory | None,
    ) -> HostPolicy:
        parts = [Part(f"level {base.level.value}", base.source.value, "table or default level")]
        policy = sts.policy if sts is not None else None
        report = ReportPolicy(domain)
        sts_failure = None
        if sts is not None:
            if policy is not None:
                parts.append(
                    Part(
                        f"MTA-STS {policy.mode.value}",
                        PolicySource.MTA_STS.value,
                        f"{sts.how}; mx {', '.join(policy.mx) or '-'}; {sts.note}".strip("; "),
                    )
                )
                if policy.mode is not StsMode.NONE:
                    report = ReportPolicy(domain, POLICY_STS, policy.lines, policy.mx)
            else:
                parts.append(Part("no MTA-STS policy", PolicySource.MTA_STS.value, sts.note))
                if sts.failure is not None:
                    sts_failure = sts.failure
                    report = ReportPolicy(domain, POLICY_STS)
        if lookup is not None:
            parts.append(
                Part(f"DANE {lookup.status.value}", PolicySource.DANE.value, lookup.reason)
            )
            tlsa_report = ReportPolicy(
                domain, POLICY_TLSA, tuple(r.to_text() for r in lookup.all_records), (name,)
            )
            if lookup.status is DaneStatus.USABLE:
                # dane-only stays dane-only (T45): the receipt and the pool say so.
                return HostPolicy(
                    name,
                    TLSLevel.DANE_ONLY if base.level is TLSLevel.DANE_ONLY else TLSLevel.DANE,
                    PolicySource.DANE,
                    tlsa_report,
                    tlsa=lookup.records,
                    sni=lookup.base_domain,
                    secure=True,
                    explanation=tuple(parts),
                )
            if lookup.status is DaneStatus.UNUSABLE and base.level is not TLSLevel.DANE_ONLY:
                # (dane-only with unusable records is skipped below: T45.)
                return HostPolicy(
                    name,
                    TLSLevel.ENCRYPT,
                    PolicySource.DANE,
                    tlsa_report,
                    sni=lookup.base_domain,
                    explanation=tuple(parts),
                )
            if lookup.status is DaneStatus.FAILED:
                return HostPolicy(
                    name,
                    base.level,
                    PolicySource.DANE,
                    tlsa_report,
                    skip=Reply(451, "4.7.5", f"DANE: {lookup.reason}; not using {name}"),
                    skip_result=DNSSEC_INVALID,
                    explanation=tuple(parts),
                )
        if base.level is TLSLevel.DANE_ONLY:
            why = lookup.reason if lookup is not None else "DANE not available"
            return HostPolicy(
                name,
                base.level,
                base.source,
                ReportPolicy(domain, POLICY_TLSA, (), (name,)),
                skip=Reply(451, "4.7.5", f"dane-only policy, but no usable TLSA: {why}"),
                skip_result=DANE_REQUIRED,
                explanation=tuple(parts),
            )
        level = TLSLevel.MAY if base.level is TLSLevel.DANE else base.level
        if policy is not None and policy.mode is StsMode.ENFORCE:
            if not policy.matches(name):
                return HostPolicy(
                    name,
                    TLSLevel.VERIFY,
                    PolicySource.MTA_STS,
                    report,
                    skip=Reply(
                        451,
                        "4.7.5",
                        f"{name} is not an MX host the MTA-STS policy of {domain} allows",
                    ),
                    skip_result=VALIDATION_FAILURE,
                    skip_reason_code="mx-mismatch",
                    explanation=tuple(parts),
                )
            return HostPolicy(
                name,
                TLSLevel.VERIFY if not level.verifies else level,
                PolicySource.MTA_STS,
                report,
                match_names=(name,),
                secure=True,
                explanation=tuple(parts),
            )
        source = base.source
        testing = policy is not None and policy.mode is StsMode.TESTING
        if testing:
            source = PolicySource.MTA_STS
        window = self.settings.stripping.window
        now = self.clock()
        expects = history is not None and (
            history.expects_starttls(now, window) or history.expects_verified(now, window)
        )
        if level is TLSLevel.MAY and expects and history is not None:
            parts.append(
                Part(
                    "expect STARTTLS",
                    PolicySource.HISTORY.value,
                    f"offered STARTTLS at {history.starttls_seen_at}; "
                    f"verified certificate at {history.verified_seen_at}",
                )
            )
        else:
            history = None
        return HostPolicy(
            name,
            level,
            source,
            report if report.type != POLICY_NONE or sts_failure else ReportPolicy(domain),
            match_names=base.match_names,
            sts_testing=testing,
            sts_mismatch=testing and policy is not None and not policy.matches(name),
            sts_failure=sts_failure,
            history=history,
            explanation=tuple(parts),
        )


__all__ = ["DestinationPolicy", "HostPolicy", "Part", "PolicyResolver"]
