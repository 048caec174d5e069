"""DNS for the auth checks, without I/O in the checks themselves.

SPF, DKIM and DMARC evaluation are written as generators that ``yield`` a ``Query`` and are
sent the answer (a sequence of strings). A driver runs them against a lookup function:
``run_sync`` with a plain function (canned zone data, a blocking resolver), ``run_async``
with a coroutine function (dnspython's asyncio resolver in the SMTP server). The rules are
written once and tested on canned zones; the network is the caller's business.

The lookup contract (``SyncLookup`` / ``AsyncLookup``): ``lookup(name, rdtype)`` with
``name`` an A-label domain without trailing dot and ``rdtype`` one of A, AAAA, MX, PTR, TXT
returns the answer's records as text:

- A / AAAA: addresses (``192.0.2.1``, ``2001:db8::1``);
- MX: exchange names in preference order (no trailing dot);
- PTR: names (no trailing dot);
- TXT: one string per record, its character-strings concatenated.

NXDOMAIN and "no records of that type" both return an empty sequence (no check here needs
the difference). SERVFAIL, timeouts and unreachable servers raise ``DNSTemporaryError``,
which the checks turn into ``temperror``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from kakitome.errors import KakitomeError

__all__ = [
    "AsyncLookup",
    "DNSTemporaryError",
    "Query",
    "Step",
    "SyncLookup",
    "ZoneLookup",
    "dnspython_lookup",
    "run_async",
    "run_sync",
]

_T = TypeVar("_T")

RDTYPES = frozenset({"A", "AAAA", "MX", "PTR", "TXT"})


class DNSTemporaryError(KakitomeError):
    """The DNS did not answer (SERVFAIL, timeout, unreachable): try again later."""


@dataclass(frozen=True, slots=True)
class Query:
    """One DNS question a check needs answered."""

    name: str
    rdtype: str


Step: TypeAlias = Generator[Query, Sequence[str], _T]
SyncLookup: TypeAlias = Callable[[str, str], Sequence[str]]
AsyncLookup: TypeAlias = Callable[[str, str], Awaitable[Sequence[str]]]


def run_sync(step: Step[_T], lookup: SyncLookup) -> _T:
    """Drive ``step`` to its result with a blocking ``lookup``."""
    try:
        query = next(step)
        while True:
            try:
                answer = lookup(query.name, query.rdtype)
            except DNSTemporaryError as exc:
                query = step.throw(exc)
            else:
                query = step.send(answer)
    except StopIteration as stop:
        result: _T = stop.value
        return result


async def run_async(step: Step[_T], lookup: AsyncLookup) -> _T:
    """Drive ``step`` to its result with a coroutine ``lookup``."""
    try:
        query = next(step)
        while True:
            try:
                answer = await lookup(query.name, query.rdtype)
            except DNSTemporaryError as exc:
                query = step.throw(exc)
            else:
                query = step.send(answer)
    except StopIteration as stop:
        result: _T = stop.value
        return result


def normalise_name(name: str) -> str:
    return name.rstrip(".").lower()


class ZoneLookup:
    """Canned zone data as a lookup function (tests, ``kakitome.testing``, dry runs).

    ``records`` maps a name to ``(rdtype, value)`` pairs; names in ``timeouts`` raise
    ``DNSTemporaryError`` for every query. Names are case-insensitive. Each call is
    recorded in ``queries``. ``await zone.aio(name, rdtype)`` is the async form.
    """

    def __init__(
        self,
        records: Mapping[str, Iterable[tuple[str, str]]] | None = None,
        timeouts: Iterable[str] = (),
    ) -> None:
        self._records: dict[tuple[str, str], list[str]] = {}
        self._timeouts = {normalise_name(name) for name in timeouts}
        self.queries: list[Query] = []
        for name, pairs in (records or {}).items():
            for rdtype, value in pairs:
                self.add(name, rdtype, value)

    def add(self, name: str, rdtype: str, value: str) -> None:
        """Add one record."""
        self._records.setdefault((normalise_name(name), rdtype.upper()), []).append(value)

    def add_timeout(self, name: str) -> None:
        """Make every query for ``name`` time out."""
        self._timeouts.add(normalise_name(name))

    def __call__(self, name: str, rdtype: str) -> Sequence[str]:
        self.queries.append(Query(name, rdtype))
        key = normalise_name(name)
        if key in self._timeouts:
            raise DNSTemporaryError(f"timeout looking up {name} {rdtype}")
        return list(self._records.get((key, rdtype.upper()), ()))

    async def aio(self, name: str, rdtype: str) -> Sequence[str]:
        """The same lookup as a coroutine."""
        return self(name, rdtype)


def dnspython_lookup(resolver: object | None = None) -> AsyncLookup:
    """An ``AsyncLookup`` over a ``dns.asyncresolver.Resolver`` (a default one if None).

    Talks to: the resolver's nameservers. Trusts: answers as data only (no DNSSEC here).
    """
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    res = resolver if resolver is not None else dns.asyncresolver.Resolver()
    assert isinstance(res, dns.asyncresolver.Resolver)

    async def lookup(name: str, rdtype: str) -> Sequence[str]:
        try:
            answer = await res.resolve(name + ".", rdtype, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise DNSTemporaryError(f"{name} {rdtype}: {exc}") from None
        except dns.exception.DNSException as exc:  # e.g. a name too long for DNS
            raise DNSTemporaryError(f"{name} {rdtype}: {exc}") from None
        if answer.rrset is None:
            return []
        out: list[str] = []
        records = list(answer.rrset)
        if rdtype == "MX":
            records.sort(key=lambda r: r.preference)
        for rdata in records:
            if rdtype == "TXT":
                out.append(b"".join(rdata.strings).decode("utf-8", "replace"))
            elif rdtype == "MX":
                out.append(rdata.exchange.to_text(omit_final_dot=True))
            elif rdtype == "PTR":
                out.append(rdata.target.to_text(omit_final_dot=True))
            else:
                out.append(rdata.address)
        return out

    return lookup
