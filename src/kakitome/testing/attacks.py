"""The adversarial downgrade matrix (issue 14): attacks on TLS to an MX, as data.

Each ``Attack`` is a scripted MX behaviour (``PeerBehaviour`` for the first MX and, for
some, a second MX), a DNS tweak (TLSA records that do not match, SERVFAIL, a stripped AD
bit) or an MTA-STS tweak (a bad policy response, a policy changed or unreachable after it
was cached), and the outcome expected under every sending ``Policy`` where the attack
matters:

- ``TLS``: delivered inside TLS; ``PLAIN``: delivered in plaintext, which the policy
  allows (the receipt names the rule);
- ``DEFER``: nothing sent, the recipient deferred with the given 4.x.x code (never a
  bounce: the queue lifetime decides);
- ``BOUNCE``: nothing sent, bounced 5.7.x (only REQUIRETLS messages, T29).

``tlsrpt`` is the RFC 8460 §4.3 result type the receipt must carry (None: not checked).
``FINDINGS`` lists the (attack, policy) cases where the agent is known to do something
else than expected; the test marks them ``xfail(strict=True)``.
``scripts/downgrade_matrix.py`` renders all of this into docs/DOWNGRADE.md.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from kakitome.testing.ca import CertKind
from kakitome.testing.https import HTTPSResponse
from kakitome.testing.mx import PeerBehaviour, StartTLSFailure

__all__ = [
    "ATTACKS",
    "FINDINGS",
    "REDIRECT",
    "Attack",
    "DNSAttack",
    "Expect",
    "Kind",
    "Policy",
    "StsAttack",
]


class Policy(StrEnum):
    """How the sender is configured for the attacked domain."""

    MAY = "may"  # the default; no TLSA, no MTA-STS, no history
    MAY_HISTORY = "may+history"  # the default, with verified TLS to the host seen before
    ENCRYPT = "encrypt"  # table entry
    VERIFY = "verify"  # table entry
    SECURE = "secure"  # table entry
    DANE = "dane"  # table entry, TLSA 3 1 1 of the real key published (DNSSEC)
    DANE_ONLY = "dane-only"  # as dane, table entry dane-only
    STS_ENFORCE = "sts-enforce"  # MTA-STS policy, mode enforce, listing the MX
    STS_TESTING = "sts-testing"  # MTA-STS policy, mode testing, listing the MX
    REQUIRETLS = "requiretls"  # a REQUIRETLS message, DANE-secured hop advertising it


class Kind(StrEnum):
    TLS = "tls"
    PLAIN = "plaintext"
    DEFER = "defer"
    BOUNCE = "bounce"


@dataclass(frozen=True, slots=True)
class Expect:
    kind: Kind
    code: str | None = None  # enhanced status code prefix, for DEFER and BOUNCE
    tlsrpt: str | None = None  # RFC 8460 result type on the receipt

    def cell(self) -> str:
        text = self.kind.value if self.code is None else f"{self.kind.value} {self.code}"
        return text if self.tlsrpt is None else f"{text} ({self.tlsrpt})"


class DNSAttack(StrEnum):
    """What the DNS says instead of the honest DANE publication (policies that look up
    TLSA: may, dane, dane-only, requiretls)."""

    TLSA_MISMATCH = "tlsa-mismatch"  # DNSSEC-signed 3 1 1 record of some other key
    TLSA_SERVFAIL = "tlsa-servfail"  # signed zone, the TLSA query answers SERVFAIL
    TLSA_UNUSABLE = "tlsa-unusable"  # signed TLSA records, none usable (usage 0)
    TLSA_INSECURE = "tlsa-insecure"  # the real TLSA record, AD stripped
    MX_BOGUS = "mx-bogus"  # the MX query answers SERVFAIL, as for bogus DNSSEC
    TLSA_TIMEOUT = "tlsa-timeout"  # signed zone, the TLSA query is never answered
    AD_ONLY_ON_TLSA = "ad-only-on-tlsa"  # the real TLSA signed, the MX and its host not


class StsAttack(StrEnum):
    """What the MTA-STS side does instead of serving the honest policy."""

    MX_NOT_LISTED = "mx-not-listed"  # the policy lists some other host only
    REDIRECT = "redirect"  # the policy URL answers 301 elsewhere
    CONTENT_TYPE = "content-type"  # the policy served as text/html
    WEBPKI = "webpki"  # the policy host's certificate has expired
    # First contact fetches and caches the honest policy; then:
    FETCH_FAILS_AFTER_CACHE = "fetch-fails-after-cache"  # new id, the fetch answers 404
    TXT_REMOVED_AFTER_CACHE = "txt-removed-after-cache"  # the TXT record disappears
    ID_CHANGED_DROPS_MX = "id-changed-drops-mx"  # new id, a policy without our MX


REDIRECT = HTTPSResponse(301, b"", location="https://elsewhere.test/.well-known/mta-sts.txt")


@dataclass(frozen=True, slots=True)
class Attack:
    name: str
    description: str
    expect: Mapping[Policy, Expect]
    behaviour: PeerBehaviour = field(default_factory=PeerBehaviour)
    # A second MX (preference 20) behaving like this; None: one MX.
    second_mx: PeerBehaviour | None = None
    dns: DNSAttack | None = None
    sts: StsAttack | None = None
    # The behaviour is set only after a first, honest delivery (which caches MTA-STS).
    after_first_delivery: bool = False


# -- expected outcomes, by what the attack achieves ---------------------------------------

_ALL = tuple(Policy)
_MANDATORY = (
    Policy.ENCRYPT,
    Policy.VERIFY,
    Policy.SECURE,
    Policy.DANE,
    Policy.DANE_ONLY,
    Policy.STS_ENFORCE,
)


def _no_tls(code: str, tlsrpt: str | None) -> dict[Policy, Expect]:
    """TLS cannot happen: plaintext only where nothing requires TLS."""
    return {
        Policy.MAY: Expect(Kind.PLAIN, None, tlsrpt),
        Policy.MAY_HISTORY: Expect(Kind.DEFER, code, tlsrpt),
        **{p: Expect(Kind.DEFER, code, tlsrpt) for p in _MANDATORY},
        Policy.STS_TESTING: Expect(Kind.PLAIN, None, tlsrpt),
        Policy.REQUIRETLS: Expect(Kind.BOUNCE, "5.7.30", tlsrpt),
    }


def _weak_tls(code: str, tlsrpt: str | None) -> dict[Policy, Expect]:
    """TLS below what mandatory levels accept (T7): opportunistic TLS still beats
    plaintext (RFC 7435), mandatory levels defer."""
    return {
        **_no_tls(code, tlsrpt),
        Policy.MAY: Expect(Kind.TLS),
        Policy.MAY_HISTORY: Expect(Kind.TLS),
        Policy.STS_TESTING: Expect(Kind.TLS),
    }


def _bad_cert(tlsrpt: str) -> dict[Policy, Expect]:
    """TLS works but the certificate does not verify by WebPKI; DANE-EE (3 1 1 of the
    real key) ignores names, dates and the chain (RFC 7672 §3.1.1)."""
    return {
        Policy.MAY: Expect(Kind.TLS),
        Policy.MAY_HISTORY: Expect(Kind.DEFER, "4.7.5", tlsrpt),
        Policy.ENCRYPT: Expect(Kind.TLS),
        Policy.VERIFY: Expect(Kind.DEFER, "4.7.5", tlsrpt),
        Policy.SECURE: Expect(Kind.DEFER, "4.7.5", tlsrpt),
        Policy.DANE: Expect(Kind.TLS),
        Policy.DANE_ONLY: Expect(Kind.TLS),
        Policy.STS_ENFORCE: Expect(Kind.DEFER, "4.7.5", tlsrpt),
        Policy.STS_TESTING: Expect(Kind.TLS, None, tlsrpt),
        Policy.REQUIRETLS: Expect(Kind.TLS),
    }


def _tlsa_failed(tlsrpt: str) -> dict[Policy, Expect]:
    """A signed MX whose TLSA cannot be used: no delivery to it under the policies that
    look TLSA up (4.7.5), REQUIRETLS bounces (5.7.30); the receipt says ``tlsrpt``."""
    return {
        p: Expect(Kind.DEFER, "4.7.5", tlsrpt) for p in (Policy.MAY, Policy.DANE, Policy.DANE_ONLY)
    } | {Policy.REQUIRETLS: Expect(Kind.BOUNCE, "5.7.30", tlsrpt)}


def _sts(enforce: Expect, testing: Expect) -> dict[Policy, Expect]:
    return {Policy.STS_ENFORCE: enforce, Policy.STS_TESTING: testing}


_HIDDEN = "starttls-not-supported"
_FAILED = "validation-failure"
_OLD_TLS = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)

ATTACKS: tuple[Attack, ...] = (
    Attack(
        "starttls-hidden",
        "STARTTLS removed from the EHLO reply (classic stripping)",
        _no_tls("4.7.4", _HIDDEN),
        PeerBehaviour(starttls=False),
    ),
    Attack(
        "starttls-454",
        "STARTTLS advertised, answered 454 4.7.0",
        _no_tls("4.7.4", _HIDDEN),
        PeerBehaviour(starttls_failure=StartTLSFailure.REFUSE),
    ),
    Attack(
        "starttls-502",
        "STARTTLS advertised, answered 502 5.5.1",
        _no_tls("4.7.4", _HIDDEN),
        PeerBehaviour(starttls_failure=StartTLSFailure.NOT_IMPLEMENTED),
    ),
    Attack(
        "starttls-421",
        "STARTTLS answered 421 and the connection closed",
        {
            **_no_tls("4.7.4", _HIDDEN),
            Policy.MAY: Expect(Kind.DEFER, "4.4.1"),
            Policy.STS_TESTING: Expect(Kind.DEFER, "4.4.1"),
        },
        PeerBehaviour(starttls_failure=StartTLSFailure.SHUTDOWN),
    ),
    Attack(
        "close-after-220",
        "220 to STARTTLS, then the connection closed before the handshake",
        _no_tls("4.7.5", _FAILED),
        PeerBehaviour(starttls_failure=StartTLSFailure.CLOSE),
    ),
    Attack(
        "garbage-after-220",
        "220 to STARTTLS, then bytes that are not TLS",
        _no_tls("4.7.5", _FAILED),
        PeerBehaviour(starttls_failure=StartTLSFailure.GARBAGE),
    ),
    Attack(
        "alert-after-220",
        "220 to STARTTLS, then a fatal TLS alert (handshake_failure)",
        _no_tls("4.7.5", _FAILED),
        PeerBehaviour(starttls_failure=StartTLSFailure.ALERT),
    ),
    Attack(
        "tls10-only",
        "the server speaks TLS 1.0 only",
        _weak_tls("4.7.5", _FAILED),
        PeerBehaviour(tls_min_version=_OLD_TLS[0], tls_max_version=_OLD_TLS[0]),
    ),
    Attack(
        "tls11-only",
        "the server speaks TLS 1.1 only",
        _weak_tls("4.7.5", _FAILED),
        PeerBehaviour(tls_min_version=_OLD_TLS[1], tls_max_version=_OLD_TLS[1]),
    ),
    Attack(
        "weak-tls12-ciphers",
        "TLS 1.2 with CBC (non-AEAD) suites only",
        _weak_tls("4.7.5", _FAILED),
        PeerBehaviour(
            tls_max_version=ssl.TLSVersion.TLSv1_2,
            tls_ciphers="ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA",
        ),
    ),
    Attack(
        "reply-injected-after-220",
        "a forged 250 sent in plaintext together with the 220 to STARTTLS (T3)",
        dict.fromkeys(_ALL, Expect(Kind.TLS)),
        PeerBehaviour(starttls_failure=StartTLSFailure.INJECT),
    ),
    Attack(
        "cert-expired",
        "the MX certificate has expired",
        _bad_cert("certificate-expired"),
        PeerBehaviour(cert=CertKind.EXPIRED),
    ),
    Attack(
        "cert-not-yet-valid",
        "the MX certificate is not valid yet",
        _bad_cert("certificate-expired"),
        PeerBehaviour(cert=CertKind.NOT_YET_VALID),
    ),
    Attack(
        "cert-self-signed",
        "a self-signed MX certificate",
        _bad_cert("certificate-not-trusted"),
        PeerBehaviour(cert=CertKind.SELF_SIGNED),
    ),
    Attack(
        "cert-wrong-name",
        "a trusted certificate for another name",
        _bad_cert("certificate-host-mismatch"),
        PeerBehaviour(cert=CertKind.WRONG_NAME),
    ),
    Attack(
        "cert-wrong-ca",
        "a certificate for the right name from a CA nobody trusts",
        _bad_cert("certificate-not-trusted"),
        PeerBehaviour(foreign_ca=True),
    ),
    Attack(
        "second-mx-plaintext",
        "the first MX breaks the handshake, the second offers no STARTTLS",
        {
            **_no_tls("4.7.4", _HIDDEN),
            Policy.MAY: Expect(Kind.PLAIN),
            Policy.STS_TESTING: Expect(Kind.PLAIN),
        },
        PeerBehaviour(starttls_failure=StartTLSFailure.CLOSE),
        second_mx=PeerBehaviour(starttls=False),
    ),
    Attack(
        "second-mx-hidden-both",
        "both MX hosts hide STARTTLS",
        _no_tls("4.7.4", _HIDDEN),
        PeerBehaviour(starttls=False),
        second_mx=PeerBehaviour(starttls=False),
    ),
    Attack(
        "requiretls-advertised-in-plaintext",
        "no STARTTLS, but REQUIRETLS advertised in plaintext",
        _no_tls("4.7.4", _HIDDEN),
        PeerBehaviour(starttls=False, requiretls=True, requiretls_in_plaintext=True),
    ),
    Attack(
        "tlsa-mismatch",
        "signed TLSA 3 1 1 that matches another key (a certificate swapped in the middle)",
        _tlsa_failed("validation-failure"),
        dns=DNSAttack.TLSA_MISMATCH,
    ),
    Attack(
        "tlsa-servfail",
        "signed zone, the TLSA lookup answers SERVFAIL (RFC 7672 §2.1.1)",
        _tlsa_failed("dnssec-invalid"),
        dns=DNSAttack.TLSA_SERVFAIL,
    ),
    Attack(
        "tlsa-servfail-starttls-hidden",
        "TLSA SERVFAIL and STARTTLS hidden: no plaintext on a signed MX",
        _tlsa_failed("dnssec-invalid"),
        PeerBehaviour(starttls=False),
        dns=DNSAttack.TLSA_SERVFAIL,
    ),
    Attack(
        "tlsa-timeout-starttls-hidden",
        "signed zone, the TLSA query times out, and STARTTLS hidden",
        _tlsa_failed("dnssec-invalid"),
        PeerBehaviour(starttls=False),
        dns=DNSAttack.TLSA_TIMEOUT,
    ),
    Attack(
        "ad-only-on-tlsa-starttls-hidden",
        "AD on the TLSA answer only (the MX and its address insecure), STARTTLS hidden: "
        "an insecure MX name gets no DANE (RFC 7672 §2.2.1)",
        {
            Policy.MAY: Expect(Kind.PLAIN),
            Policy.DANE: Expect(Kind.PLAIN),
            Policy.DANE_ONLY: Expect(Kind.DEFER, "4.7.5", "dane-required"),
            Policy.REQUIRETLS: Expect(Kind.BOUNCE, "5.7.30", _HIDDEN),
        },
        PeerBehaviour(starttls=False),
        dns=DNSAttack.AD_ONLY_ON_TLSA,
    ),
    Attack(
        "tlsa-unusable-starttls-hidden",
        "signed TLSA none of which is usable, and STARTTLS hidden",
        {
            Policy.MAY: Expect(Kind.DEFER, "4.7.4"),
            Policy.DANE: Expect(Kind.DEFER, "4.7.4"),
            Policy.DANE_ONLY: Expect(Kind.DEFER, "4.7.5"),
            Policy.REQUIRETLS: Expect(Kind.BOUNCE, "5.7.30", _HIDDEN),
        },
        PeerBehaviour(starttls=False),
        dns=DNSAttack.TLSA_UNUSABLE,
    ),
    Attack(
        "tlsa-ad-stripped",
        "the TLSA answer with its AD bit stripped, and STARTTLS hidden "
        "(insecure TLSA does not count, RFC 7672 §2.2)",
        {
            Policy.MAY: Expect(Kind.PLAIN),
            Policy.DANE: Expect(Kind.PLAIN),
            Policy.DANE_ONLY: Expect(Kind.DEFER, "4.7.5", "dane-required"),
            Policy.REQUIRETLS: Expect(Kind.BOUNCE, "5.7.30", _HIDDEN),
        },
        PeerBehaviour(starttls=False),
        dns=DNSAttack.TLSA_INSECURE,
    ),
    Attack(
        "dnssec-bogus-mx",
        "the MX lookup fails as a validating resolver fails bogus data (SERVFAIL)",
        {p: Expect(Kind.DEFER, "4.4.3") for p in (Policy.MAY, Policy.DANE, Policy.DANE_ONLY)}
        | {Policy.REQUIRETLS: Expect(Kind.DEFER, "4.4.3")},
        dns=DNSAttack.MX_BOGUS,
    ),
    Attack(
        "sts-mx-not-listed",
        "the MTA-STS policy does not list the MX",
        _sts(Expect(Kind.DEFER, "4.7.5", _FAILED), Expect(Kind.TLS, None, _FAILED)),
        sts=StsAttack.MX_NOT_LISTED,
    ),
    Attack(
        "sts-redirect",
        "the policy URL redirects (RFC 8461 §3.3: not followed, so no policy)",
        _sts(
            Expect(Kind.TLS, None, "sts-policy-fetch-error"),
            Expect(Kind.TLS, None, "sts-policy-fetch-error"),
        ),
        sts=StsAttack.REDIRECT,
    ),
    Attack(
        "sts-redirect-starttls-hidden",
        "the policy URL redirects on first contact and STARTTLS is hidden: without a "
        "policy nothing forbids plaintext (the limit of MTA-STS on first contact)",
        _sts(Expect(Kind.PLAIN, None, _HIDDEN), Expect(Kind.PLAIN, None, _HIDDEN)),
        PeerBehaviour(starttls=False),
        sts=StsAttack.REDIRECT,
    ),
    Attack(
        "sts-content-type",
        "the policy served as text/html",
        _sts(
            Expect(Kind.TLS, None, "sts-policy-invalid"),
            Expect(Kind.TLS, None, "sts-policy-invalid"),
        ),
        sts=StsAttack.CONTENT_TYPE,
    ),
    Attack(
        "sts-webpki-invalid",
        "the policy host shows an expired certificate",
        _sts(
            Expect(Kind.TLS, None, "sts-webpki-invalid"),
            Expect(Kind.TLS, None, "sts-webpki-invalid"),
        ),
        sts=StsAttack.WEBPKI,
    ),
    Attack(
        "sts-fetch-fails-after-cache",
        "policy cached; then a new id whose fetch fails, and STARTTLS hidden "
        "(the cached policy still applies, RFC 8461 §5.1)",
        _sts(Expect(Kind.DEFER, "4.7.4"), Expect(Kind.PLAIN)),
        PeerBehaviour(starttls=False),
        sts=StsAttack.FETCH_FAILS_AFTER_CACHE,
        after_first_delivery=True,
    ),
    Attack(
        "sts-txt-removed-after-cache",
        "policy cached; then the TXT record removed, and STARTTLS hidden",
        _sts(Expect(Kind.DEFER, "4.7.4"), Expect(Kind.PLAIN)),
        PeerBehaviour(starttls=False),
        sts=StsAttack.TXT_REMOVED_AFTER_CACHE,
        after_first_delivery=True,
    ),
    Attack(
        "sts-id-changed-drops-mx",
        "policy cached; then a new id with a policy that no longer lists the MX",
        _sts(Expect(Kind.DEFER, "4.7.5", _FAILED), Expect(Kind.TLS)),
        sts=StsAttack.ID_CHANGED_DROPS_MX,
        after_first_delivery=True,
    ),
    Attack(
        "sts-cached-cert-expired",
        "policy cached; then the MX shows an expired certificate",
        _sts(
            Expect(Kind.DEFER, "4.7.5", "certificate-expired"),
            Expect(Kind.TLS, None, "certificate-expired"),
        ),
        PeerBehaviour(cert=CertKind.EXPIRED),
        sts=None,
        after_first_delivery=True,
    ),
)

# (attack, policy) -> what the agent does instead (the test marks these xfail, strict).
FINDINGS: dict[tuple[str, Policy], str] = {}
