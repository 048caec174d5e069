"""The trace fields every received message gets: ``Received`` (T9) and
``Authentication-Results`` (T35).

``Received`` names the protocol as RFC 3848 does (``ESMTP``, ``ESMTPS`` with TLS,
``ESMTPA``/``ESMTPSA`` when authenticated, ``SMTP`` after HELO) and, with TLS, the version
and cipher in Postfix's words: ``(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384
(256/256 bits))``. The HELO name is the client's and untrusted: it is reduced to a token.

``Authentication-Results`` comes from ``kakitome.auth``: SPF for the MAIL FROM domain (or
HELO for a null sender), DKIM for every signature, DMARC for the From domain; fields that
already claim our authserv-id are removed first (RFC 8601 §5). DNS goes to the resolver in
the settings; a DNS failure is a ``temperror`` in the field, never a refusal. The three
checks together are bounded (``AUTH_BUDGET`` seconds; the rest is ``temperror``), SPF
outcomes are cached per client IP, MAIL FROM and HELO (``SPFCache``), and the resolver
caches answers (10,000 entries, by TTL).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

import dns.asyncresolver
import dns.nameserver
import dns.resolver

from kakitome.auth.dkim_verify import verify_dkim_async
from kakitome.auth.dmarc import author_domain, check_dmarc_async
from kakitome.auth.dnsio import AsyncLookup, dnspython_lookup
from kakitome.auth.results import (
    AuthResult,
    add_authentication_results,
    dkim_auth_results,
    dmarc_auth_result,
    spf_auth_result,
)
from kakitome.auth.spf import SPFOutcome, check_host_async
from kakitome.config import DNSSettings
from kakitome.dns.resolver import parse_nameserver

__all__ = [
    "AUTH_BUDGET",
    "SPFCache",
    "TLSInfo",
    "auth_lookup",
    "authenticate",
    "received_field",
    "with_auth_results",
]

_TOKEN_CHARS = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")


@dataclass(frozen=True, slots=True)
class TLSInfo:
    version: str  # TLSv1.3
    cipher: str  # TLS_AES_256_GCM_SHA384
    bits: int

    def to_dict(self) -> dict[str, str | int]:
        return {"version": self.version, "cipher": self.cipher, "bits": self.bits}


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool) -> str:
    """RFC 3848 ``with`` keyword."""
    if not esmtp:
        return "SMTPS" if tls else "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


def received_field(
    *,
    helo: str,
    client_ip: str,
    hostname: str,
    protocol: str,
    tls: TLSInfo | None,
    queue_id: str,
    recipient: str | None,
    now: float,
) -> bytes:
    """One ``Received`` field, folded, CRLF-terminated."""
    helo_token = _TOKEN_CHARS.sub("", helo)[:255] or "unknown"
    lines = [f"Received: from {helo_token} ([{client_ip}])", f"\tby {hostname} (Kakitome)"]
    lines.append(f"\twith {protocol} id {queue_id}")
    if tls is not None:
        lines.append(
            f"\t(using {tls.version} with cipher {tls.cipher} ({tls.bits}/{tls.bits} bits))"
        )
    if recipient is not None and "\r" not in recipient and "\n" not in recipient:
        lines.append(f"\tfor <{recipient}>")
    date = format_datetime(datetime.fromtimestamp(now, UTC))
    lines[-1] += f"; {date}"
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


def auth_lookup(settings: DNSSettings) -> AsyncLookup:
    """The ``kakitome.auth`` DNS lookup over the nameservers in the settings."""
    if settings.nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        servers: list[str | dns.nameserver.Nameserver] = []
        for entry in settings.nameservers:
            host, port = parse_nameserver(entry)
            servers.append(dns.nameserver.Do53Nameserver(host, port))
        resolver.nameservers = servers
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = settings.timeout
    resolver.timeout = min(settings.timeout, 2.0)
    resolver.cache = dns.resolver.LRUCache(10_000)
    return dnspython_lookup(resolver)


# The whole of SPF + DKIM + DMARC for one message gets at most this many seconds of DNS
# (SPF alone may make 10 lookups, each up to the resolver's lifetime). What is not done in
# time is reported as ``temperror``; the message is accepted all the same.
AUTH_BUDGET = 8.0


class SPFCache:
    """SPF outcomes by (client IP, MAIL FROM, HELO) for ``ttl`` seconds, at most ``size``
    entries. One MTA sending many bounces or reports costs one evaluation; the DNS answers
    themselves are cached by the resolver (positive and negative, by their TTL)."""

    def __init__(self, ttl: float = 300.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[tuple[str, str, str], tuple[float, SPFOutcome]] = OrderedDict()

    def get(self, key: tuple[str, str, str], now: float) -> SPFOutcome | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] < now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found[1]

    def put(self, key: tuple[str, str, str], outcome: SPFOutcome, now: float) -> None:
        if outcome.result.value in ("temperror",):
            return  # try again next time
        self._entries[key] = (now + self.ttl, outcome)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


async def authenticate(
    message: bytes,
    *,
    client_ip: str,
    mail_from: str,
    helo: str,
    lookup: AsyncLookup,
    receiver: str,
    budget: float = AUTH_BUDGET,
    spf_cache: SPFCache | None = None,
) -> list[AuthResult]:
    """SPF, DKIM and DMARC of one message, as Authentication-Results clauses, in at most
    ``budget`` seconds (what is left undone is a ``temperror``)."""
    results: list[AuthResult] = []
    done: set[str] = set()
    try:
        async with asyncio.timeout(budget):
            key = (client_ip, mail_from.lower(), helo.lower())
            now = time.monotonic()
            spf = spf_cache.get(key, now) if spf_cache is not None else None
            if spf is None:
                spf = await check_host_async(client_ip, mail_from, helo, lookup, receiver=receiver)
                if spf_cache is not None:
                    spf_cache.put(key, spf, now)
            results.append(spf_auth_result(spf, mail_from=mail_from, helo=helo))
            done.add("spf")
            dkim = await verify_dkim_async(message, lookup)
            results.extend(dkim_auth_results(dkim))
            done.add("dkim")
            author = author_domain(message)
            if author is not None:
                spf_domain = mail_from.rpartition("@")[2] if mail_from else helo
                dmarc = await check_dmarc_async(
                    author,
                    lookup,
                    dkim_domains=dkim.passing_domains,
                    spf_domain=spf_domain,
                    spf_pass=spf.result.value == "pass",
                )
                results.append(dmarc_auth_result(dmarc))
            done.add("dmarc")
    except TimeoutError:
        reason = f"DNS lookups took longer than {budget:g} s"
        for method in ("spf", "dkim", "dmarc"):
            if method not in done:
                results.append(AuthResult(method, "temperror", reason=reason))
    return results


def with_auth_results(
    message: bytes, authserv_id: str, results: Sequence[AuthResult], received: bytes
) -> bytes:
    """``Received`` first, then our ``Authentication-Results``, then the message without
    forged results carrying our id."""
    return received + add_authentication_results(message, authserv_id, results)
