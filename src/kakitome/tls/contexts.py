"""Client TLS contexts per policy level, and what a peer certificate is worth.

Talks to: nothing by itself; builds ``ssl.SSLContext`` objects for the SMTP client and
judges the certificate an MX presented.

Trusts: the system trust store plus ``settings.tls.ca_file`` (only ``ca_file`` when
``settings.tls.ca_file_only``), and nothing else. A certificate is

* **verified** when its chain verifies against those anchors and a DNS name in it matches
  one of the names the policy asks for (the MX host name for ``verify``, the next-hop
  domain or ``match_names`` for ``secure``; RFC 6125 wildcards in the left-most label only);
* **trusted** when the chain verifies but no name matches;
* **untrusted** when the chain does not verify (expired, self-signed, unknown CA);
* **anonymous** when the server showed no certificate.

How we learn this with Python 3.11's ``ssl`` (no verify callback, no access to the
unverified chain): the handshake is first made with a *verifying* context (CERT_REQUIRED,
``check_hostname`` off — names are matched here, so that "trusted" and "verified" can be
told apart). When that handshake fails on the certificate and the level does not require
a verified peer (``may``, ``encrypt``), the agent connects again with a non-verifying
context and records *untrusted* with OpenSSL's reason. To avoid paying two connections
every time, ``UnverifiedCertificates`` remembers per MX host the SHA-256 of the leaf that
did not verify; later connections go straight to the non-verifying context and check that
the leaf is the same one (a different leaf is recorded as untrusted with "not verified:
certificate changed" and forgotten, so the next connection verifies afresh). We chose this
over verifying the leaf ourselves with ``cryptography`` after a CERT_NONE handshake because
without the intermediates (unavailable before Python 3.13's ``get_unverified_chain``)
most real chains could not be built, and we would judge by other rules than OpenSSL's.

Limits: opportunistic contexts (``may``) accept any protocol version OpenSSL still offers
and its default ciphers at security level 0: an old cipher still beats plaintext.
Mandatory contexts (``encrypt`` and above) accept only TLS 1.2 and 1.3 with forward-secret
AEAD ciphers (T7). Compression and renegotiation are off everywhere; no client certificate
is ever sent.
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import NameOID

from kakitome.config import TLSSettings
from kakitome.tls.receipt import PeerVerification

# TLS 1.2 suites with forward secrecy and AEAD; TLS 1.3 suites are all of this kind.
MANDATORY_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"
OPPORTUNISTIC_CIPHERS = "DEFAULT:@SECLEVEL=0"


class ContextKind(StrEnum):
    """Which of the four client contexts: strength × whether the chain is verified."""

    OPPORTUNISTIC_VERIFYING = "opportunistic-verifying"
    OPPORTUNISTIC_NONVERIFYING = "opportunistic-nonverifying"
    MANDATORY_VERIFYING = "mandatory-verifying"
    MANDATORY_NONVERIFYING = "mandatory-nonverifying"

    @classmethod
    def choose(cls, *, mandatory: bool, verifying: bool) -> ContextKind:
        if mandatory:
            return cls.MANDATORY_VERIFYING if verifying else cls.MANDATORY_NONVERIFYING
        return cls.OPPORTUNISTIC_VERIFYING if verifying else cls.OPPORTUNISTIC_NONVERIFYING

    @property
    def mandatory(self) -> bool:
        return self in (ContextKind.MANDATORY_VERIFYING, ContextKind.MANDATORY_NONVERIFYING)

    @property
    def verifying(self) -> bool:
        return self in (ContextKind.MANDATORY_VERIFYING, ContextKind.OPPORTUNISTIC_VERIFYING)


def _base_context(settings: TLSSettings, verifying: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if verifying:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if not settings.ca_file_only:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if settings.ca_file:
            ctx.load_verify_locations(cafile=settings.ca_file)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.post_handshake_auth = False
    return ctx


def build_context(settings: TLSSettings, kind: ContextKind) -> ssl.SSLContext:
    """A fresh client context of the given kind."""
    ctx = _base_context(settings, kind.verifying)
    if kind.mandatory:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(MANDATORY_CIPHERS)
    else:
        try:
            ctx.set_ciphers(OPPORTUNISTIC_CIPHERS)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1
        except (ssl.SSLError, ValueError):
            ctx.set_ciphers("DEFAULT")
    return ctx


class ClientContexts:
    """The four client contexts, built once; TLS sessions only resume within one context."""

    def __init__(self, settings: TLSSettings) -> None:
        self.settings = settings
        self._contexts: dict[ContextKind, ssl.SSLContext] = {}

    def get(self, kind: ContextKind) -> ssl.SSLContext:
        ctx = self._contexts.get(kind)
        if ctx is None:
            ctx = self._contexts[kind] = build_context(self.settings, kind)
        return ctx


# -- certificates and names ---------------------------------------------------------------


def certificate_sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def certificate_dns_names(der: bytes) -> list[str]:
    """DNS names of a certificate: its SAN dNSNames, or its CN when it has none."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [n.lower().rstrip(".") for n in san.value.get_values_for_type(x509.DNSName)]
        if names:
            return names
    except x509.ExtensionNotFound:
        pass
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return [str(attr.value).lower().rstrip(".") for attr in common[:1]]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def dns_name_matches(pattern: str, name: str) -> bool:
    """RFC 6125 matching: exact, or ``*.`` as the whole left-most label of ``pattern``."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if not pattern or not name or _is_ip(name):
        return pattern == name
    if pattern == name:
        return True
    if pattern.startswith("*."):
        suffix = pattern[2:]
        if suffix.count(".") < 1:  # no "*.com"
            return False
        head, _, rest = name.partition(".")
        return bool(head) and rest == suffix
    return False


def certificate_matches(cert_names: Iterable[str], wanted: Iterable[str]) -> str | None:
    """The first wanted name a certificate name matches, or None.

    A wanted name starting with a dot (Postfix's ``.example.com``) matches any subdomain.
    """
    cert_list = list(cert_names)
    for want in wanted:
        want = want.lower().rstrip(".")
        for cert_name in cert_list:
            if want.startswith("."):
                bare = cert_name[2:] if cert_name.startswith("*.") else cert_name
                if bare.endswith(want):
                    return want
            elif dns_name_matches(cert_name, want):
                return want
    return None


@dataclass(frozen=True, slots=True)
class PeerJudgement:
    verification: PeerVerification
    sha256: str | None
    verify_error: str | None = None


def judge_peer(
    peer_certificate: bytes | None,
    *,
    chain_verified: bool,
    wanted_names: Sequence[str],
    verify_error: str | None = None,
) -> PeerJudgement:
    """What the certificate of a completed handshake is worth for these names."""
    if peer_certificate is None:
        return PeerJudgement(PeerVerification.ANONYMOUS, None, verify_error)
    sha = certificate_sha256(peer_certificate)
    if not chain_verified:
        return PeerJudgement(
            PeerVerification.UNTRUSTED, sha, verify_error or "certificate not verified"
        )
    names = certificate_dns_names(peer_certificate)
    if certificate_matches(names, wanted_names):
        return PeerJudgement(PeerVerification.VERIFIED, sha)
    shown = ", ".join(names[:5]) or "none"
    want = ", ".join(wanted_names)
    return PeerJudgement(
        PeerVerification.TRUSTED, sha, f"name mismatch: certificate has {shown}; wanted {want}"
    )


# -- memory of certificates that do not verify ---------------------------------------------


@dataclass(frozen=True, slots=True)
class UnverifiedEntry:
    sha256: str
    verify_error: str
    expires: float


class UnverifiedCertificates:
    """Per MX host: the leaf that did not verify and why, for ``ttl`` seconds.

    Bounded (``max_entries``, least recently used out first); the clock is injected.
    """

    def __init__(
        self,
        ttl: float = 3600.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, UnverifiedEntry] = OrderedDict()

    def get(self, mx_host: str) -> UnverifiedEntry | None:
        entry = self._entries.get(mx_host)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._entries[mx_host]
            return None
        self._entries.move_to_end(mx_host)
        return entry

    def remember(self, mx_host: str, sha256: str, verify_error: str) -> None:
        self._entries[mx_host] = UnverifiedEntry(sha256, verify_error, self._clock() + self.ttl)
        self._entries.move_to_end(mx_host)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, mx_host: str) -> None:
        self._entries.pop(mx_host, None)

    def __len__(self) -> int:
        return len(self._entries)
