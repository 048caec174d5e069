"""DNS facts for the checker: MX set, TLSA (with DNSSEC status), PTR/FCrDNS, TLS-RPT.

Talks to: the nameservers of ``dns.resolver.Resolver`` (the delivery engine's resolver, so
the checker sees what delivery would see), nothing else.

Trusts: answers as data to report. DNSSEC status is the resolver's ``authenticated`` flag
(AD bit from a resolver the settings trust, T12); TLSA records without it are reported as
insecure and not used for a verdict of "protected".

Limits: the resolver's per-query lifetime (``dns.timeout``) and its bounded caches; MX sets
and address lists are cut as the resolver cuts them. DANE matching is delivery's own
(``tls.dane.match_tlsa``) on the chain the probe recorded: DANE-EE (usage 3) against the
leaf, names and dates ignored; DANE-TA (usage 2) against a certificate of the chain, then
the leaf must chain to it, be in date and carry the MX host name. A probe without a
recorded chain (a cache entry from an older version) is judged on its leaf's digests and
DANE-TA is then reported as "unchecked".
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import ipaddress

import dns.exception
import dns.resolver

from kakitome.checker.facts import (
    AddressProbe,
    CertificateFacts,
    DaneFacts,
    ReverseDNS,
    TLSARecordFacts,
    TlsRptFacts,
)
from kakitome.dns.resolver import Resolver
from kakitome.errors import DeliveryError
from kakitome.tls.dane import TLSARecord, match_tlsa

# RFC 7672: TLSA for SMTP lives at _25._tcp.<MX host> whatever port a test world uses.
DANE_PORT = 25


async def published_mx(resolver: Resolver, domain: str) -> tuple[tuple[int, str], ...]:
    """The MX records as published (preference, name), including names without addresses;
    empty on any failure (the caller has the resolver's verdict already)."""
    try:
        answer = await resolver.query(domain, "MX")
    except dns.exception.DNSException:
        return ()
    if answer.rrset is None:
        return ()
    out = sorted(
        (int(r.preference), r.exchange.to_text(omit_final_dot=True).lower())
        for r in answer.rrset
    )
    return tuple((p, n) for p, n in out if n not in ("", "."))


async def lookup_tlsa(resolver: Resolver, host: str) -> DaneFacts:
    """The TLSA RRset of ``_25._tcp.<host>`` and whether it and the host are DNSSEC-secure."""
    name = f"_{DANE_PORT}._tcp.{host}"
    try:
        tlsa, host_answer = await asyncio.gather(
            resolver.resolve_with_ad(name, "TLSA"), resolver.resolve_with_ad(host, "A")
        )
    except DeliveryError as exc:
        return DaneFacts(name, lookup_error=exc.reply.text)
    records = tuple(
        TLSARecordFacts(int(r.usage), int(r.selector), int(r.mtype), bytes(r.cert).hex())
        for r in tlsa.records
    )
    return DaneFacts(
        name, records, secure=tlsa.authenticated, host_secure=host_answer.authenticated
    )


def tlsa_association(record: TLSARecordFacts, cert: CertificateFacts) -> bool:
    """Does ``record`` describe this certificate (RFC 6698 §2.1)?

    Works from the digests in ``CertificateFacts`` (so cached probes can be judged): for
    matching type 0 the record's full data is hashed and compared with the digest.
    """
    data = record.data.lower()
    full, spki = (cert.sha256, cert.sha512), (cert.spki_sha256, cert.spki_sha512)
    digests = spki if record.selector == 1 else full
    if record.matching == 0:
        try:
            return hashlib.sha256(bytes.fromhex(data)).hexdigest() == digests[0]
        except ValueError:
            return False
    if record.matching == 1:
        return data == digests[0]
    if record.matching == 2:
        return data == digests[1]
    return False


def _tlsa_records(records: tuple[TLSARecordFacts, ...]) -> list[TLSARecord]:
    out = []
    for r in records:
        try:
            out.append(TLSARecord(r.usage, r.selector, r.matching, bytes.fromhex(r.data)))
        except ValueError:  # not hex: cannot match anything
            continue
    return out


def dane_verdict(dane: DaneFacts, probe: AddressProbe, *, now: dt.datetime | None = None) -> str:
    """"match", "mismatch", "unchecked" or "no-certificate" for one probed address."""
    cert = probe.certificate
    if not probe.tls_ok or cert is None:
        return "no-certificate"
    usable = dane.usable
    if probe.chain:
        try:
            chain = [base64.b64decode(c, validate=True) for c in probe.chain]
        except ValueError:
            chain = []
        if chain:
            # The TLSA base domain is the MX host name (the checker does not expand CNAMEs).
            result = match_tlsa(chain, _tlsa_records(usable), names=(probe.host,), now=now)
            return "match" if result.ok else "mismatch"
    # No chain recorded: DANE-EE from the leaf's digests; a DANE-TA record naming the leaf
    # itself is allowed (the leaf is then its own anchor); other DANE-TA cannot be judged.
    if any(r.usage == 3 and tlsa_association(r, cert) for r in usable):
        return "match"
    if any(r.usage == 2 and tlsa_association(r, cert) for r in usable):
        return "match"
    if any(r.usage == 2 for r in usable):
        return "unchecked"
    return "mismatch"


def reverse_name(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer


async def reverse_dns(resolver: Resolver, address: str) -> ReverseDNS:
    """PTR names of ``address`` and the first that resolves back to it (T39)."""
    try:
        answer = await resolver.query(reverse_name(address), "PTR")
    except dns.resolver.NXDOMAIN:
        return ReverseDNS(address)
    except dns.exception.DNSException as exc:
        return ReverseDNS(address, error=f"PTR lookup failed: {exc}")
    names = tuple(
        r.target.to_text(omit_final_dot=True).lower() for r in (answer.rrset or ())
    )[:5]
    wanted = ipaddress.ip_address(address)
    for name in names:
        try:
            addresses = await resolver.resolve_addresses(name)
        except DeliveryError:
            continue
        if any(ipaddress.ip_address(a) == wanted for a in addresses):
            return ReverseDNS(address, names, confirmed_name=name)
    return ReverseDNS(address, names)


async def lookup_tlsrpt(resolver: Resolver, domain: str) -> TlsRptFacts:
    """The ``_smtp._tls`` record (RFC 8460 §3): exactly one ``v=TLSRPTv1`` with ``rua``."""
    try:
        texts = await resolver.resolve_txt(f"_smtp._tls.{domain}")
    except DeliveryError as exc:
        return TlsRptFacts(error=f"lookup failed: {exc.reply.text}")
    records = tuple(t for t in texts if t.replace(" ", "").startswith("v=TLSRPTv1"))
    if not records:
        return TlsRptFacts()
    if len(records) > 1:
        return TlsRptFacts(records, error=f"{len(records)} records; exactly one is allowed")
    rua: list[str] = []
    for part in records[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip() == "rua":
            rua.extend(u.strip() for u in value.split(",") if u.strip())
    if not rua:
        return TlsRptFacts(records, error="no rua= tag")
    bad = [u for u in rua if not u.lower().startswith(("mailto:", "https:"))]
    if bad:
        return TlsRptFacts(records, tuple(rua), error=f"rua must be mailto: or https: ({bad[0]})")
    return TlsRptFacts(records, tuple(rua))
