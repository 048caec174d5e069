"""DANE for SMTP (RFC 7672, with RFC 6698 and RFC 7671): TLSA lookup and matching.

Talks to: the DNS resolver only (A/AAAA of the MX host for its DNSSEC status and CNAME
expansion, the host's own CNAME when a chain was not validated as a whole, TLSA at
``_25._tcp.<expanded name>`` and ``_25._tcp.<host>``). The certificates judged here come from a
handshake the delivery agent made.

Trusts: a TLSA RRset only when the answer carried the AD bit from a resolver that
``settings.dns.trust_ad`` declares validating, and only when the MX host's address
records were validated too (T12); anything else is "insecure" and ignored (T16). A
lookup that fails (SERVFAIL, which is also what a validating resolver answers for bogus
data, or a timeout) is a failure, never "no TLSA" (T15).

Matching (T13, T17): usages 3 (DANE-EE) and 2 (DANE-TA) with selectors 0 (certificate)
and 1 (SubjectPublicKeyInfo) and matching types 0 (full), 1 (SHA-256), 2 (SHA-512);
usages 0 and 1 and unknown parameters are unusable (RFC 7672 §3.1.3). DANE-EE matches the
leaf and ignores its names and dates (RFC 7672 §3.1.1). DANE-TA matches a certificate
the server sent in its chain (RFC 7671 §5.2.2: servers must send the trust anchor) and
then requires the leaf to chain to it, in date, with a name matching the TLSA base domain
or the MX host name (RFC 7672 §3.2.3).

How the chain is checked (Python 3.11): the handshake is made with a non-verifying
context, the peer's whole unverified chain is read from the SSL object
(``get_unverified_chain``, public from Python 3.13 and present, undocumented, on the
``_ssl`` object since 3.10), and the path leaf → intermediates → TA is verified with
cryptography's X.509 verifier (``cryptography.x509.verification``) with the matched TA as
the only trust anchor and the current time. An SSLContext holding the TA as its only
anchor would need a second handshake and, for a TA that is not self-signed, OpenSSL's
partial-chain flag; verifying offline after one handshake is cheaper and judges exactly
the certificates the server sent.

Limits: at most ``MAX_TLSA`` records considered; certificates of the chain at most
``MAX_CHAIN``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import dns.exception
import dns.flags
import dns.resolver
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from kakitome.dns.resolver import Resolver, to_alabel
from kakitome.errors import DeliveryError

MAX_TLSA = 32
MAX_CHAIN = 10
SMTP_PORT_LABEL = "_25._tcp"

_DIGEST_SIZES = {1: 32, 2: 64}


@dataclass(frozen=True, slots=True)
class TLSARecord:
    usage: int
    selector: int
    matching: int
    data: bytes

    @property
    def usable(self) -> bool:
        """RFC 7672 §3.1.3: only DANE-TA(2) and DANE-EE(3), known selector and matching."""
        if self.usage not in (2, 3) or self.selector not in (0, 1):
            return False
        if self.matching == 0:
            return bool(self.data)
        return _DIGEST_SIZES.get(self.matching) == len(self.data)

    def to_text(self) -> str:
        return f"{self.usage} {self.selector} {self.matching} {self.data.hex()}"


class DaneStatus(StrEnum):
    USABLE = "usable"  # authenticated TLSA with usable records: must match
    UNUSABLE = "unusable"  # authenticated TLSA, none usable: mandatory TLS, unauthenticated
    NONE = "none"  # securely no TLSA: DANE does not apply
    INSECURE = "insecure"  # MX host or TLSA not validated: DANE does not apply
    FAILED = "failed"  # the lookup failed: do not use this MX


@dataclass(frozen=True, slots=True)
class DaneLookup:
    mx_host: str
    status: DaneStatus
    base_domain: str  # the TLSA base domain (SNI and reference identifier)
    records: tuple[TLSARecord, ...] = ()  # the usable ones
    all_records: tuple[TLSARecord, ...] = ()
    reason: str = ""


def _from_rdata(rdata: Any) -> TLSARecord:
    return TLSARecord(int(rdata.usage), int(rdata.selector), int(rdata.mtype), bytes(rdata.cert))


@dataclass(frozen=True, slots=True)
class _HostNames:
    """What the address lookup of an MX host says about its TLSA base domains."""

    secure: bool  # the host's own record (address or first CNAME) and the final addresses
    expanded: str  # the CNAME-expanded name (the host itself when it is no alias)
    expansion_secure: bool  # every CNAME of the chain validated too


def _validated(resolver: Resolver, answer: dns.resolver.Answer) -> bool:
    return bool(answer.response.flags & dns.flags.AD) and resolver.settings.trust_ad


async def _addresses_validated(resolver: Resolver, host: str) -> tuple[bool, str]:
    """(whether the A or AAAA answer for ``host`` was validated, its CNAME-expanded name).

    The AD bit of an answer that followed a CNAME chain covers every link of it."""
    authenticated = False
    canonical = host
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.query(host, rdtype)
        except dns.exception.DNSException:
            continue
        if answer.rrset is None:
            continue
        canonical = answer.canonical_name.to_text(omit_final_dot=True).lower()
        if _validated(resolver, answer):
            authenticated = True
    return authenticated, canonical


async def _address_status(resolver: Resolver, host: str) -> _HostNames:
    """The DNSSEC status of an MX host's names (RFC 7672 §2.2.2, T12, T18).

    An answer validated as a whole means the host, every CNAME and the final address
    records are secure. When an alias chain was not validated as a whole, the links are
    asked one by one: if the host's own CNAME and the final address records are secure
    but a CNAME between them is not, the expanded name cannot be trusted as a TLSA base
    domain and only the original name may be; if the host's own CNAME is insecure,
    DANE does not apply to the host at all.
    """
    authenticated, canonical = await _addresses_validated(resolver, host)
    if authenticated or canonical == host:
        return _HostNames(authenticated, canonical, authenticated)
    try:
        first_link = await resolver.query(host, "CNAME")
    except dns.exception.DNSException:
        return _HostNames(False, canonical, False)
    if first_link.rrset is None or not _validated(resolver, first_link):
        return _HostNames(False, canonical, False)
    final_secure, _ = await _addresses_validated(resolver, canonical)
    return _HostNames(final_secure, canonical, False)


async def _tlsa_at(resolver: Resolver, base: str) -> tuple[DaneStatus, tuple[TLSARecord, ...], str]:
    name = f"{SMTP_PORT_LABEL}.{base}"
    try:
        answer = await resolver.resolve_with_ad(name, "TLSA")
    except DeliveryError as exc:
        return DaneStatus.FAILED, (), f"TLSA lookup for {name} failed: {exc.reply.text}"
    if not answer.authenticated:
        return DaneStatus.INSECURE, (), f"TLSA answer for {name} is not DNSSEC-validated"
    records = tuple(_from_rdata(r) for r in answer.records[:MAX_TLSA])
    if not records:
        return DaneStatus.NONE, (), f"securely no TLSA at {name}"
    if any(r.usable for r in records):
        return DaneStatus.USABLE, records, f"{len(records)} TLSA record(s) at {name}"
    return DaneStatus.UNUSABLE, records, f"TLSA at {name} has no usable record"


async def lookup_tlsa(resolver: Resolver, mx_host: str) -> DaneLookup:
    """The DANE status of one MX host (T12, T14-T16, T18).

    RFC 7672 §2.2.2: the host's address records must be validated. For an alias whose
    whole CNAME chain is validated, TLSA is looked up first at ``_25._tcp.<expanded
    name>`` and, only when that is securely empty (or insecure), at ``_25._tcp.<host>``;
    the name where it was found is the TLSA base domain (SNI, reference identifier). For
    an alias whose chain is not validated beyond the host's own CNAME, only the original
    name is tried.
    """
    host = to_alabel(mx_host)
    names = await _address_status(resolver, host)
    if not names.secure:
        return DaneLookup(
            host, DaneStatus.INSECURE, host, reason=f"address records of {host} not validated"
        )
    base = host
    status, reason = DaneStatus.NONE, ""
    records: tuple[TLSARecord, ...] = ()
    if names.expanded != host and names.expansion_secure:
        # A secure CNAME chain makes the expanded name the first base domain to try;
        # securely nothing there means trying the original name.
        status, records, reason = await _tlsa_at(resolver, names.expanded)
        if status in (DaneStatus.USABLE, DaneStatus.UNUSABLE, DaneStatus.FAILED):
            base = names.expanded
    if base == host:
        status, records, reason = await _tlsa_at(resolver, host)
        if names.expanded != host and not names.expansion_secure:
            reason += f" (CNAME chain to {names.expanded} not validated: not used)"
    usable = tuple(r for r in records if r.usable)
    return DaneLookup(host, status, base, usable, records, reason)


# -- matching -------------------------------------------------------------------------------


def association(der: bytes, selector: int, matching: int) -> bytes:
    """Certificate association data of a certificate (RFC 6698 §2.1)."""
    if selector == 1:
        cert = x509.load_der_x509_certificate(der)
        data = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        data = der
    if matching == 1:
        return hashlib.sha256(data).digest()
    if matching == 2:
        return hashlib.sha512(data).digest()
    return data


def _matches(der: bytes, record: TLSARecord) -> bool:
    try:
        return association(der, record.selector, record.matching) == record.data
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class DaneMatch:
    ok: bool
    usage: int | None = None
    record: TLSARecord | None = None
    reason: str = ""


def _verify_to_anchor(
    chain: Sequence[bytes], anchor_index: int, names: Sequence[str], now: dt.datetime
) -> str | None:
    """None when the leaf chains to ``chain[anchor_index]`` with a matching name."""
    try:
        certs = [x509.load_der_x509_certificate(c) for c in chain[: anchor_index + 1]]
    except ValueError as exc:
        return f"unparseable certificate: {exc}"
    leaf, anchor, intermediates = certs[0], certs[-1], certs[1:-1]
    builder = PolicyBuilder().store(Store([anchor])).time(now)
    last = "no reference identifier"
    for name in dict.fromkeys(n.lower().rstrip(".") for n in names if n):
        try:
            verifier = builder.build_server_verifier(x509.DNSName(name))
            verifier.verify(leaf, intermediates)
            return None
        except (VerificationError, ValueError) as exc:
            last = f"{name}: {exc}"
    return last


def match_tlsa(
    chain: Sequence[bytes],
    records: Sequence[TLSARecord],
    *,
    names: Sequence[str],
    now: dt.datetime | None = None,
) -> DaneMatch:
    """Does the presented chain (leaf first, DER) satisfy one usable TLSA record?"""
    if not chain:
        return DaneMatch(False, reason="the server presented no certificate")
    chain = list(chain[:MAX_CHAIN])
    now = now or dt.datetime.now(dt.UTC)
    usable = [r for r in records if r.usable]
    for record in usable:
        if record.usage == 3 and _matches(chain[0], record):
            return DaneMatch(True, 3, record)
    problems: list[str] = []
    for record in usable:
        if record.usage != 2:
            continue
        for index in range(1, len(chain)):
            if not _matches(chain[index], record):
                continue
            problem = _verify_to_anchor(chain, index, names, now)
            if problem is None:
                return DaneMatch(True, 2, record)
            problems.append(f"DANE-TA {record.to_text()[:20]}...: {problem}")
    if problems:
        return DaneMatch(False, reason="; ".join(problems))
    return DaneMatch(False, reason="no TLSA record matches the certificate chain")


def peer_chain(ssl_object: Any) -> list[bytes]:
    """The peer's certificate chain as sent (leaf first, DER), from an SSLObject.

    Python 3.13 has ``SSLObject.get_unverified_chain()``; 3.10-3.12 have the same method,
    undocumented, on the underlying ``_ssl._SSLSocket``. Empty when neither is there.
    """
    if ssl_object is None:
        return []
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:
        return []
    out: list[bytes] = []
    for cert in getter() or []:
        if isinstance(cert, bytes):
            out.append(cert)
        else:
            out.append(cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
    return out


__all__ = [
    "DaneLookup",
    "DaneMatch",
    "DaneStatus",
    "TLSARecord",
    "association",
    "lookup_tlsa",
    "match_tlsa",
    "peer_chain",
]
