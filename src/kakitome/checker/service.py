"""The checker service: gather a domain's facts (DNS, probes, MTA-STS, TLS-RPT) and report.

Talks to: DNS through the delivery engine's ``Resolver``; each MX address on
``checker.port`` through ``checker.probe.Prober``; each ``mta-sts.<domain>`` over HTTPS.
Nothing is sent as mail and nothing is written except the optional cache file.

Trusts: see the modules it uses; findings come only from ``checker.checks``.

Limits: probes in flight are bounded by ``checker.concurrency`` (all domains together)
and by ``checker.per_host_concurrency`` per IP address; one probe of an address is shared
by every domain whose MX set contains that host (a provider hosting thousands of a list's
domains is probed once per host and address); each probe is bounded by
``checker.probe_timeout``. With a cache, facts younger than ``checker.cache_ttl`` are
reused and no network work is done for them.

Two depths: ``full`` (``kakitome check DOMAIN``) probes every address of every MX, each
TLS version separately, PTR/FCrDNS and TLS-RPT; ``full=False`` (list checks) probes the
first address of each MX once and skips version probes, PTR and TLS-RPT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar, cast

from kakitome.checker.cache import CheckerCache
from kakitome.checker.checks import CheckOptions, run_checks
from kakitome.checker.dnsfacts import lookup_tlsa, lookup_tlsrpt, published_mx, reverse_dns
from kakitome.checker.facts import (
    AddressProbe,
    DaneFacts,
    DomainFacts,
    HostFacts,
    MtaStsFacts,
    ReverseDNS,
    TlsRptFacts,
)
from kakitome.checker.mta_sts import check_mta_sts
from kakitome.checker.probe import Prober
from kakitome.checker.report import DomainReport
from kakitome.config import Settings
from kakitome.dns.resolver import Resolver, to_alabel
from kakitome.errors import PermanentFailure, TemporaryFailure

T = TypeVar("T")


@dataclass(slots=True)
class CheckerStats:
    """Counters of network work done (tests use them to prove the cache works)."""

    probes: int = 0  # addresses probed (each one or more SMTP connections)
    domains_resolved: int = 0  # domains whose DNS facts were looked up
    policy_fetches: int = 0  # MTA-STS lookups (TXT and maybe HTTPS)
    cache_hits: int = 0


class Checker:
    """One per command or request; shares probes among the domains it checks."""

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver | None = None,
        prober: Prober | None = None,
        cache: CheckerCache | None = None,
    ) -> None:
        self.settings = settings
        self.resolver = resolver or Resolver(settings)
        self.stats = CheckerStats()
        self.prober = prober or Prober(settings, on_probe=self._count_probe)
        self.cache = cache
        self._slots = asyncio.Semaphore(settings.checker.concurrency)
        self._shared: dict[str, asyncio.Future[object]] = {}

    def _count_probe(self, host: str, ip: str) -> None:
        self.stats.probes += 1

    async def _once(self, key: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make`` once per key in this checker; later callers share the result."""
        shared = self._shared.get(key)
        if shared is None:
            future: asyncio.Future[T] = asyncio.ensure_future(make())
            self._shared[key] = cast("asyncio.Future[object]", future)
            return await future
        return cast(T, await shared)

    # -- reports --------------------------------------------------------------------------

    def options(self) -> CheckOptions:
        return CheckOptions(expiry_warning_days=self.settings.checker.expiry_warning_days)

    async def check_domain(self, domain: str, *, full: bool = True) -> DomainReport:
        """The report on the receiving side of ``domain``."""
        facts = await self.domain_facts(domain, full=full)
        return DomainReport(facts, tuple(run_checks(facts, self.options())))

    # -- facts ----------------------------------------------------------------------------

    async def domain_facts(self, domain: str, *, full: bool = True) -> DomainFacts:
        try:
            name = to_alabel(domain)
        except PermanentFailure:
            return DomainFacts(domain, exists=False)
        key = f"domain:{'full' if full else 'light'}:{self.settings.checker.port}:{name}"
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                self.stats.cache_hits += 1
                return DomainFacts.from_dict(cached)
        facts = await self._gather(name, full=full)
        if self.cache is not None and not facts.dns_error:
            self.cache.put(key, facts.to_dict())
        return facts

    async def _gather(self, name: str, *, full: bool) -> DomainFacts:
        self.stats.domains_resolved += 1
        try:
            mx = await self.resolver.resolve_mx(name)
        except PermanentFailure as exc:
            if exc.reply.enhanced == "5.1.2":
                return DomainFacts(name, exists=False)
            published = await published_mx(self.resolver, name)
            hosts = tuple(HostFacts(h, p, ()) for p, h in published)
            return DomainFacts(name, mx_published=published, hosts=hosts)
        except TemporaryFailure as exc:
            return DomainFacts(name, dns_error=exc.reply.text)
        if mx.null_mx:
            return DomainFacts(name, null_mx=True)
        implicit = any(h.implicit for h in mx.hosts)
        published = () if implicit else await published_mx(self.resolver, name)
        ordered = sorted(mx.hosts, key=lambda h: (h.preference, h.name))
        resolved = {h.name for h in ordered}
        sts_task = asyncio.ensure_future(self._mta_sts(name))
        rpt_task = (
            asyncio.ensure_future(lookup_tlsrpt(self.resolver, name)) if full else None
        )
        host_facts = list(
            await asyncio.gather(
                *(
                    self._host(h.name, h.preference, h.addresses, h.implicit, full=full)
                    for h in ordered
                )
            )
        )
        for preference, host_name in published:
            if host_name not in resolved:
                host_facts.append(HostFacts(host_name, preference, ()))
        sts: MtaStsFacts = await sts_task
        rpt: TlsRptFacts | None = await rpt_task if rpt_task is not None else None
        return DomainFacts(
            name,
            implicit_mx=implicit,
            mx_published=published,
            hosts=tuple(host_facts),
            mta_sts=sts,
            tlsrpt=rpt,
        )

    async def _mta_sts(self, domain: str) -> MtaStsFacts:
        self.stats.policy_fetches += 1
        return await check_mta_sts(self.resolver, domain, self.settings)

    async def _host(
        self,
        name: str,
        preference: int,
        addresses: tuple[str, ...],
        implicit: bool,
        *,
        full: bool,
    ) -> HostFacts:
        targets = addresses if full else addresses[:1]
        dane_task = asyncio.ensure_future(self._once(f"tlsa:{name}", lambda: self._tlsa(name)))
        probes: list[AddressProbe] = list(
            await asyncio.gather(*(self._probe(name, ip, full=full) for ip in targets))
        )
        reverse: tuple[ReverseDNS, ...] = ()
        if full:
            reverse = tuple(
                await asyncio.gather(*(reverse_dns(self.resolver, ip) for ip in targets))
            )
        dane: DaneFacts = await dane_task
        return HostFacts(
            name,
            preference,
            addresses,
            implicit=implicit,
            probes=tuple(probes),
            dane=dane,
            reverse=reverse,
        )

    async def _tlsa(self, host: str) -> DaneFacts:
        return await lookup_tlsa(self.resolver, host)

    async def _probe(self, host: str, ip: str, *, full: bool) -> AddressProbe:
        port = self.settings.checker.port
        key = f"probe:{'full' if full else 'light'}:{port}:{host}:{ip}"

        async def run() -> AddressProbe:
            if self.cache is not None:
                cached = self.cache.get(key)
                if cached is not None:
                    self.stats.cache_hits += 1
                    return AddressProbe.from_dict(cached)
            async with self._slots:
                result = await self.prober.probe(host, ip, versions=full)
            if self.cache is not None:
                self.cache.put(key, result.to_dict())
            return result

        probe = await self._once(key, run)
        # The same probe may serve many domains; its facts do not depend on the domain.
        return replace(probe)
