"""DNS lookups for delivery and the checker: MX (with null MX and implicit MX), addresses,
TXT, and answers with their AD flag for DANE.

Talks to: the nameservers in ``settings.dns.nameservers`` ("host:port"), or the system's
(/etc/resolv.conf) when the list is empty, over UDP with TCP fallback for truncated
answers (dnspython's asyncio resolver; T12). An answer that still has the TC bit is a
failed lookup, never an empty one.

Trusts: the answers' content as routing data only. The AD flag is reported raw and as
``authenticated`` — which is true only when ``settings.dns.trust_ad`` says the resolver is a
validating one on a trusted path (T12); nothing else here depends on DNSSEC.

Limits: every query has ``settings.dns.timeout`` as its lifetime; answers are cached by
dnspython's LRU cache within their TTL (bounded, 10,000 entries), and positive answers
also in a plain dictionary in front of it, also within their TTL (a hit there costs no
name parsing and no task: the worker asks for the same MX and addresses for every
batch); an MX set is cut at
``MAX_MX_HOSTS`` hosts, each with at most ``MAX_ADDRESSES`` addresses.

Failures are typed: NXDOMAIN (or a domain with neither MX nor addresses) raises
``PermanentFailure`` (5.1.2 / 5.4.4); SERVFAIL, timeouts and unreachable servers raise
``TemporaryFailure`` (4.4.3). Callers of the agent turn those into per-recipient results.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from kakitome.config import DNSSettings, Settings
from kakitome.dns.types import MXHost, MXResult
from kakitome.errors import PermanentFailure, TemporaryFailure
from kakitome.smtp.replies import Reply

MAX_MX_HOSTS = 20
MAX_ADDRESSES = 16
CACHE_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class DNSAnswer:
    """An answer's records as text, with its AD flag (``ad``) and whether we may trust it."""

    name: str
    rdtype: str
    records: tuple[Any, ...]  # dnspython rdata objects
    ad: bool
    authenticated: bool  # ad and the resolver is trusted (settings.dns.trust_ad)
    nxdomain: bool = False


def parse_nameserver(entry: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"``, ``"[::1]:53"``, ``"::1"`` or ``"10.0.0.1"`` -> (address, port)."""
    entry = entry.strip()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest.lstrip(":") or 53)
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port)
    return entry, 53


def to_alabel(domain: str) -> str:
    """A domain in A-labels (IDNA 2008, UTS 46 mapping), lower case, no trailing dot."""
    domain = domain.strip().rstrip(".")
    if not domain:
        raise PermanentFailure(Reply(550, "5.1.2", "empty destination domain"))
    if domain.isascii():
        return domain.lower()
    try:
        name = dns.name.from_unicode(domain, idna_codec=dns.name.IDNA_2008_Practical)
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise PermanentFailure(Reply(550, "5.1.2", f"invalid domain {domain!r}: {exc}")) from exc
    return name.to_text(omit_final_dot=True).lower()


def _temporary(name: str, what: str, exc: BaseException) -> TemporaryFailure:
    return TemporaryFailure(Reply(451, "4.4.3", f"DNS {what} lookup for {name} failed: {exc}"))


class Resolver:
    """Async DNS with the answers delivery needs. One per process; safe to share."""

    def __init__(
        self, settings: Settings | DNSSettings, *, rng: random.Random | None = None
    ) -> None:
        dns_settings = settings.dns if isinstance(settings, Settings) else settings
        self.settings = dns_settings
        self._rng = rng or random.Random()
        if dns_settings.nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            servers: list[str | dns.nameserver.Nameserver] = []
            for entry in dns_settings.nameservers:
                host, port = parse_nameserver(entry)
                servers.append(dns.nameserver.Do53Nameserver(host, port))
            resolver.nameservers = servers
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.lifetime = dns_settings.timeout
        resolver.timeout = min(dns_settings.timeout, 2.0)
        resolver.cache = dns.resolver.LRUCache(CACHE_ENTRIES)
        # Ask for the AD bit (RFC 6840 §5.7) so a validating resolver reports it.
        resolver.flags = dns.flags.RD | dns.flags.AD
        self._resolver = resolver
        self._answers: dict[tuple[str, str, bool], dns.resolver.Answer] = {}

    def _cached(
        self, name: str, rdtype: str, raise_on_no_answer: bool = False
    ) -> dns.resolver.Answer | None:
        answer = self._answers.get((name, rdtype, raise_on_no_answer))
        if answer is not None and answer.expiration > time.time():
            return answer
        return None

    async def query(
        self, name: str, rdtype: str, *, raise_on_no_answer: bool = False
    ) -> dns.resolver.Answer:
        """A raw dnspython answer. NXDOMAIN raises dns.resolver.NXDOMAIN; other errors raise
        dnspython's exceptions (callers here translate them)."""
        cached = self._cached(name, rdtype, raise_on_no_answer)
        if cached is not None:
            return cached
        answer = await self._resolver.resolve(
            name, rdtype, search=False, raise_on_no_answer=raise_on_no_answer
        )
        if answer.response.flags & dns.flags.TC:
            # dnspython retries truncated UDP answers over TCP; should one ever come back
            # anyway, its empty answer section must not pass for "no such records" (a
            # TLSA set that vanishes would downgrade DANE, an MX set an implicit MX).
            message = f"answer for {name} {rdtype} still truncated (TC)"
            raise dns.message.Truncated(message)  # type: ignore[no-untyped-call]
        if len(self._answers) >= CACHE_ENTRIES:
            self._answers.clear()
        self._answers[(name, rdtype, raise_on_no_answer)] = answer
        return answer

    async def resolve_with_ad(self, name: str, rdtype: str) -> DNSAnswer:
        """Records of one type with the AD flag (for DANE); NXDOMAIN gives no records.

        SERVFAIL and timeouts raise TemporaryFailure (T15: a failed TLSA lookup defers).
        """
        qname = to_alabel(name)
        try:
            answer = await self.query(qname, rdtype)
        except dns.resolver.NXDOMAIN as exc:
            responses: dict[Any, Any] = exc.kwargs.get("responses") or {}
            ad = any(bool(r.flags & dns.flags.AD) for r in responses.values())
            return DNSAnswer(qname, rdtype, (), ad, ad and self.settings.trust_ad, nxdomain=True)
        except dns.exception.DNSException as exc:
            raise _temporary(qname, rdtype, exc) from exc
        ad = bool(answer.response.flags & dns.flags.AD)
        records = tuple(answer.rrset) if answer.rrset is not None else ()
        return DNSAnswer(qname, rdtype, records, ad, ad and self.settings.trust_ad)

    async def resolve_txt(self, name: str) -> list[str]:
        """TXT strings of a name (each record's strings joined); empty when there are none."""
        answer = await self.resolve_with_ad(name, "TXT")
        return [b"".join(r.strings).decode("utf-8", errors="replace") for r in answer.records]

    async def resolve_addresses(self, host: str) -> tuple[str, ...]:
        """AAAA then A addresses of a host; NXDOMAIN/NODATA give ()."""
        addresses, _ = await self._addresses(to_alabel(host))
        return addresses

    async def _addresses(self, host: str) -> tuple[tuple[str, ...], BaseException | None]:
        """(addresses IPv6 first, the temporary error if a lookup failed for a reason other
        than the name having no such records)."""
        results: Sequence[dns.resolver.Answer | BaseException | None]
        results = [self._cached(host, "AAAA"), self._cached(host, "A")]
        if None in results:
            results = await asyncio.gather(
                self.query(host, "AAAA"), self.query(host, "A"), return_exceptions=True
            )
        out: list[str] = []
        error: BaseException | None = None
        for result in results:
            if isinstance(result, dns.resolver.NXDOMAIN):
                continue
            if isinstance(result, BaseException):
                if not isinstance(result, dns.exception.DNSException):
                    raise result
                error = result
                continue
            if result is not None and result.rrset is not None:
                out.extend(r.address for r in result.rrset)
        return tuple(out[:MAX_ADDRESSES]), error

    async def resolve_mx(self, domain: str) -> MXResult:
        """The mail exchangers of a domain in the order to try them (RFC 5321 §5.1).

        Sorted by preference, shuffled among equals; each host with its addresses (hosts
        without any are left out). Null MX (RFC 7505) gives ``null_mx=True``; no MX at all
        gives the domain itself as an implicit MX (T36).
        """
        name = to_alabel(domain)
        try:
            answer = await self.query(name, "MX")
        except dns.resolver.NXDOMAIN as exc:
            raise PermanentFailure(Reply(550, "5.1.2", f"domain {name} does not exist")) from exc
        except dns.exception.DNSException as exc:
            raise _temporary(name, "MX", exc) from exc

        if answer.rrset is None or len(answer.rrset) == 0:
            return await self._implicit_mx(name)

        records = [
            (int(r.preference), r.exchange.to_text(omit_final_dot=True).lower())
            for r in answer.rrset
        ]
        if any(exchange in ("", ".") for _, exchange in records):
            if len(records) == 1:
                return MXResult(name, (), null_mx=True)
            # A null MX among others is a misconfiguration (RFC 7505 §3); ignore the dot.
            records = [(p, e) for p, e in records if e not in ("", ".")]
        ordered = self._order(records)[:MAX_MX_HOSTS]
        looked_up = await asyncio.gather(*(self._addresses(host) for _, host in ordered))
        hosts: list[MXHost] = []
        errors: list[BaseException] = []
        for (preference, host), (addresses, error) in zip(ordered, looked_up, strict=True):
            if error is not None:
                errors.append(error)
            if addresses:
                hosts.append(MXHost(host, preference, addresses))
        if not hosts:
            if errors:
                raise _temporary(name, "MX host address", errors[0])
            raise PermanentFailure(
                Reply(550, "5.4.4", f"no address for any mail exchanger of {name}")
            )
        return MXResult(name, tuple(hosts))

    def _order(self, records: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
        shuffled = list(dict.fromkeys(records))
        self._rng.shuffle(shuffled)
        return sorted(shuffled, key=lambda item: item[0])  # stable: equals stay shuffled

    async def _implicit_mx(self, name: str) -> MXResult:
        addresses, error = await self._addresses(name)
        if addresses:
            return MXResult(name, (MXHost(name, 0, addresses, implicit=True),))
        if error is not None:
            raise _temporary(name, "A/AAAA", error)
        raise PermanentFailure(Reply(550, "5.4.4", f"{name} has no MX and no address records"))
