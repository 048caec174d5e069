"""What the checker observed, as frozen values: DNS facts, SMTP/TLS probe results, certificate
facts. Checks (``checker.checks``) turn these into findings; nothing here judges.

Every value converts to plain JSON (``to_dict``) and back (``from_dict``) so results can be
cached (``checker.cache``) and printed by the CLI, the API and the web UI alike.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field, fields
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from kakitome.tls.contexts import certificate_dns_names, certificate_sha256


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _Record:
    """to_dict for flat frozen dataclasses (nested values with their own to_dict)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class CertificateFacts(_Record):
    """The leaf certificate an MX (or policy host) showed, read with ``cryptography``."""

    sha256: str
    spki_sha256: str
    sha512: str  # digests for TLSA matching types 1 and 2 (selector 0 and 1)
    spki_sha512: str
    subject: str
    issuer: str
    names: tuple[str, ...]  # SAN dNSNames, else the CN
    not_before: str  # ISO 8601 UTC
    not_after: str
    days_left: int  # negative when expired
    key_type: str  # "RSA", "EC", "Ed25519", "Ed448", "DSA", "unknown"
    key_bits: int
    self_signed: bool  # issuer == subject and the signature verifies with its own key

    @classmethod
    def from_der(cls, der: bytes, *, now: dt.datetime | None = None) -> CertificateFacts:
        cert = x509.load_der_x509_certificate(der)
        now = now or dt.datetime.now(dt.UTC)
        key = cert.public_key()
        key_type, bits = "unknown", 0
        if isinstance(key, rsa.RSAPublicKey):
            key_type, bits = "RSA", key.key_size
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key_type, bits = "EC", key.curve.key_size
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key_type, bits = "Ed25519", 256
        elif isinstance(key, ed448.Ed448PublicKey):
            key_type, bits = "Ed448", 456
        elif isinstance(key, dsa.DSAPublicKey):
            key_type, bits = "DSA", key.key_size
        self_signed = False
        if cert.issuer == cert.subject:
            try:
                cert.verify_directly_issued_by(cert)
                self_signed = True
            except Exception:  # InvalidSignature, unsupported key types
                self_signed = False
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        not_after = cert.not_valid_after_utc
        return cls(
            sha256=certificate_sha256(der),
            spki_sha256=certificate_sha256(spki),
            sha512=hashlib.sha512(der).hexdigest(),
            spki_sha512=hashlib.sha512(spki).hexdigest(),
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            names=tuple(certificate_dns_names(der)),
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=not_after.isoformat(),
            days_left=(not_after - now).days,
            key_type=key_type,
            key_bits=bits,
            self_signed=self_signed,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CertificateFacts:
        return cls(**{**data, "names": tuple(data["names"])})


@dataclass(frozen=True, slots=True)
class VersionProbe(_Record):
    """Whether one TLS version was accepted in a handshake limited to it."""

    version: str  # "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"
    accepted: bool
    cipher: str | None = None
    error: str | None = None  # why not (handshake alert, or "not offered by our OpenSSL")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionProbe:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class AddressProbe(_Record):
    """One SMTP conversation (or a few) with one address of one MX host."""

    host: str
    address: str
    port: int
    reachable: bool
    error: str | None = None  # connect/read failure in words
    banner: str | None = None  # the greeting, "220 mx.example ESMTP"
    banner_code: int | None = None
    banner_name: str | None = None  # first word of the greeting text
    ehlo_name: str | None = None  # first word of the EHLO reply
    extensions: tuple[str, ...] = ()  # EHLO keywords before TLS
    extensions_tls: tuple[str, ...] = ()  # EHLO keywords after TLS
    starttls_offered: bool = False
    starttls_reply: str | None = None  # the reply to STARTTLS when not 220
    tls_ok: bool = False  # a handshake completed (verifying or not)
    tls_error: str | None = None  # why no handshake completed
    tls_version: str | None = None
    cipher: str | None = None
    cipher_bits: int = 0
    chain_verified: bool = False  # the chain verified against our anchors
    verify_error: str | None = None  # OpenSSL's reason when it did not
    name_matched: str | None = None  # the MX name the certificate matched, if any
    certificate: CertificateFacts | None = None
    versions: tuple[VersionProbe, ...] = ()  # empty when not probed
    # The certificates the server sent, leaf first, base64 DER (at most tls.dane.MAX_CHAIN):
    # what DANE-TA is judged on. Empty when no handshake completed (or in older caches).
    chain: tuple[str, ...] = ()

    @property
    def requiretls(self) -> bool:
        return "REQUIRETLS" in self.extensions_tls

    @property
    def verification(self) -> str:
        """Postfix's vocabulary: none, anonymous, untrusted, trusted, verified."""
        if not self.tls_ok:
            return "none"
        if self.certificate is None:
            return "anonymous"
        if not self.chain_verified:
            return "untrusted"
        return "verified" if self.name_matched else "trusted"

    def to_dict(self) -> dict[str, Any]:
        out = _Record.to_dict(self)
        out["verification"] = self.verification
        out["requiretls"] = self.requiretls
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AddressProbe:
        data = {k: v for k, v in data.items() if k not in ("verification", "requiretls")}
        cert = data.get("certificate")
        return cls(
            **{
                **data,
                "extensions": tuple(data.get("extensions", ())),
                "extensions_tls": tuple(data.get("extensions_tls", ())),
                "certificate": CertificateFacts.from_dict(cert) if cert else None,
                "versions": tuple(VersionProbe.from_dict(v) for v in data.get("versions", ())),
                "chain": tuple(data.get("chain", ())),
            }
        )


@dataclass(frozen=True, slots=True)
class ReverseDNS(_Record):
    """PTR of an address and whether a PTR name resolves back to it (FCrDNS, T39)."""

    address: str
    names: tuple[str, ...] = ()
    confirmed_name: str | None = None  # a PTR name whose A/AAAA include the address
    error: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReverseDNS:
        return cls(**{**data, "names": tuple(data.get("names", ()))})


@dataclass(frozen=True, slots=True)
class TLSARecordFacts(_Record):
    usage: int
    selector: int
    matching: int
    data: str  # hex

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TLSARecordFacts:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class DaneFacts(_Record):
    """The TLSA RRset of ``_25._tcp.<host>`` and how it compares with the certificate."""

    name: str
    records: tuple[TLSARecordFacts, ...] = ()
    secure: bool = False  # TLSA answer authenticated (AD from a trusted resolver)
    host_secure: bool = False  # the host's address answer authenticated too
    lookup_error: str | None = None
    # Per probed address: "match", "mismatch", "unchecked" (usage 2 without a recorded
    # chain), or "no-certificate"; filled in after the probe.
    matches: tuple[tuple[str, str], ...] = ()

    @property
    def usable(self) -> tuple[TLSARecordFacts, ...]:
        """RFC 7672 §3.1.3: only DANE-TA(2) and DANE-EE(3) are usable for SMTP."""
        return tuple(r for r in self.records if r.usage in (2, 3) and r.selector in (0, 1))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DaneFacts:
        return cls(
            **{
                **data,
                "records": tuple(TLSARecordFacts.from_dict(r) for r in data.get("records", ())),
                "matches": tuple((a, m) for a, m in data.get("matches", ())),
            }
        )


@dataclass(frozen=True, slots=True)
class HostFacts(_Record):
    """One MX host: its DNS facts and a probe per address."""

    name: str
    preference: int
    addresses: tuple[str, ...]
    implicit: bool = False
    address_error: str | None = None
    probes: tuple[AddressProbe, ...] = ()
    dane: DaneFacts | None = None
    reverse: tuple[ReverseDNS, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostFacts:
        dane = data.get("dane")
        return cls(
            name=data["name"],
            preference=data["preference"],
            addresses=tuple(data["addresses"]),
            implicit=data.get("implicit", False),
            address_error=data.get("address_error"),
            probes=tuple(AddressProbe.from_dict(p) for p in data.get("probes", ())),
            dane=DaneFacts.from_dict(dane) if dane else None,
            reverse=tuple(ReverseDNS.from_dict(r) for r in data.get("reverse", ())),
        )


@dataclass(frozen=True, slots=True)
class MtaStsFacts(_Record):
    """The ``_mta-sts`` TXT record and the policy fetched from ``mta-sts.<domain>``."""

    records: tuple[str, ...] = ()  # every TXT string starting with v=STSv1
    record_error: str | None = None  # why the record set is not a valid record
    policy_id: str | None = None
    fetch_error: str | None = None
    policy_cert_error: str | None = None  # the policy host's certificate did not verify
    policy_text: str | None = None
    policy_error: str | None = None  # syntax
    mode: str | None = None
    mx_patterns: tuple[str, ...] = ()
    max_age: int | None = None

    @property
    def present(self) -> bool:
        return bool(self.records)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MtaStsFacts:
        return cls(
            **{
                **data,
                "records": tuple(data.get("records", ())),
                "mx_patterns": tuple(data.get("mx_patterns", ())),
            }
        )


@dataclass(frozen=True, slots=True)
class TlsRptFacts(_Record):
    records: tuple[str, ...] = ()  # TXT strings starting with v=TLSRPTv1
    rua: tuple[str, ...] = ()
    error: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TlsRptFacts:
        return cls(
            records=tuple(data.get("records", ())),
            rua=tuple(data.get("rua", ())),
            error=data.get("error"),
        )


@dataclass(frozen=True, slots=True)
class DomainFacts(_Record):
    """Everything observed about the receiving side of one domain."""

    domain: str
    exists: bool = True
    dns_error: str | None = None  # SERVFAIL / timeout on the MX lookup
    null_mx: bool = False
    implicit_mx: bool = False
    # (preference, name) as published, including hosts without addresses.
    mx_published: tuple[tuple[int, str], ...] = ()
    hosts: tuple[HostFacts, ...] = ()
    mta_sts: MtaStsFacts | None = None
    tlsrpt: TlsRptFacts | None = None
    checked_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    def to_dict(self) -> dict[str, Any]:
        out = _Record.to_dict(self)
        out["mx_published"] = [[p, n] for p, n in self.mx_published]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainFacts:
        sts, rpt = data.get("mta_sts"), data.get("tlsrpt")
        return cls(
            domain=data["domain"],
            exists=data.get("exists", True),
            dns_error=data.get("dns_error"),
            null_mx=data.get("null_mx", False),
            implicit_mx=data.get("implicit_mx", False),
            mx_published=tuple((int(p), str(n)) for p, n in data.get("mx_published", ())),
            hosts=tuple(HostFacts.from_dict(h) for h in data.get("hosts", ())),
            mta_sts=MtaStsFacts.from_dict(sts) if sts else None,
            tlsrpt=TlsRptFacts.from_dict(rpt) if rpt else None,
            checked_at=data.get("checked_at", ""),
        )
