"""Every finding of the checker, each produced against a world host built to show it."""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kakitome.checker.checks import CheckOptions, check_dane
from kakitome.checker.facts import (
    AddressProbe,
    CertificateFacts,
    DaneFacts,
    DomainFacts,
    HostFacts,
    TLSARecordFacts,
)
from kakitome.checker.report import Transport
from kakitome.checker.sending import adapt_findings, reverse_dns_findings, sending_findings
from kakitome.checker.service import Checker
from kakitome.config import Settings
from kakitome.dns.resolver import Resolver
from kakitome.testing import (
    CertKind,
    Fault,
    LocalInternet,
    Peer,
    PeerBehaviour,
    StartTLSFailure,
    TestCA,
)
from tests.checker.conftest import Policy, PolicyHost
from tests.fixtures_world import MakeDomain

V = ssl.TLSVersion


def codes(report: object) -> set[str]:
    return {f.code for f in report.findings}  # type: ignore[attr-defined]


async def check(make_checker: Callable[..., Checker], domain: str):  # type: ignore[no-untyped-def]
    return await make_checker().check_domain(domain)


async def test_verified_host(make_domain: MakeDomain, make_checker: Callable[..., Checker]) -> None:
    """A well-configured MX: STARTTLS, TLS 1.2+1.3 only, verified certificate, grade B."""
    domain, _ = make_domain()
    report = await check(make_checker, domain.name)
    assert {"SMTP_OK", "STARTTLS_OK", "CERT_VERIFIED", "REQUIRETLS_NOT_OFFERED"} <= codes(report)
    assert {"DANE_ABSENT", "MTA_STS_ABSENT", "TLSRPT_ABSENT", "PTR_MISSING"} <= codes(report)
    probe = report.facts.hosts[0].probes[0]
    accepted = {v.version for v in probe.versions if v.accepted}
    assert accepted == {"TLSv1.2", "TLSv1.3"}
    assert probe.certificate is not None and probe.certificate.key_type == "EC"
    assert probe.certificate.days_left > 300
    assert report.grade[0] == "B"
    assert report.transport[0] is Transport.VERIFIED


async def test_no_starttls(make_domain: MakeDomain, make_checker: Callable[..., Checker]) -> None:
    """No STARTTLS: critical, grade F, plaintext."""
    domain, _ = make_domain(PeerBehaviour(starttls=False))
    report = await check(make_checker, domain.name)
    assert "STARTTLS_NOT_OFFERED" in codes(report)
    assert report.grade[0] == "F"
    assert report.transport[0] is Transport.PLAINTEXT


@pytest.mark.parametrize("failure", [StartTLSFailure.REFUSE, StartTLSFailure.GARBAGE])
async def test_starttls_failed(
    make_domain: MakeDomain, make_checker: Callable[..., Checker], failure: StartTLSFailure
) -> None:
    """STARTTLS offered but refused or broken: STARTTLS_FAILED, plaintext."""
    domain, _ = make_domain(PeerBehaviour(starttls_failure=failure))
    report = await check(make_checker, domain.name)
    assert "STARTTLS_FAILED" in codes(report)
    assert report.transport[0] is Transport.PLAINTEXT


async def test_tls10_only(make_domain: MakeDomain, make_checker: Callable[..., Checker]) -> None:
    """TLS 1.0 only: legacy version, no modern version, weak cipher."""
    domain, _ = make_domain(PeerBehaviour(tls_min_version=V.TLSv1, tls_max_version=V.TLSv1))
    report = await check(make_checker, domain.name)
    assert {"TLS_LEGACY_VERSION", "TLS_NO_MODERN_VERSION", "WEAK_CIPHER"} <= codes(report)
    probe = report.facts.hosts[0].probes[0]
    assert [v.version for v in probe.versions if v.accepted] == ["TLSv1"]
    assert report.grade[0] == "D"


async def test_no_tls13(make_domain: MakeDomain, make_checker: Callable[..., Checker]) -> None:
    """TLS 1.2 at most: TLS13_NOT_SUPPORTED, nothing worse."""
    domain, _ = make_domain(PeerBehaviour(tls_max_version=V.TLSv1_2))
    report = await check(make_checker, domain.name)
    assert "TLS13_NOT_SUPPORTED" in codes(report)
    assert "TLS_LEGACY_VERSION" not in codes(report)


@pytest.mark.parametrize(
    ("kind", "code", "transport"),
    [
        (CertKind.EXPIRED, "CERT_EXPIRED", Transport.ENCRYPTED),
        (CertKind.NOT_YET_VALID, "CERT_NOT_YET_VALID", Transport.ENCRYPTED),
        (CertKind.WRONG_NAME, "CERT_NAME_MISMATCH", Transport.ENCRYPTED),
        (CertKind.SELF_SIGNED, "CERT_SELF_SIGNED", Transport.ENCRYPTED),
        (CertKind.WEAK_KEY, "CERT_WEAK_KEY", Transport.VERIFIED),
    ],
)
async def test_bad_certificates(
    make_domain: MakeDomain,
    make_checker: Callable[..., Checker],
    kind: CertKind,
    code: str,
    transport: Transport,
) -> None:
    """Each kind of bad certificate gives its finding and grade D."""
    domain, _ = make_domain(PeerBehaviour(cert=kind))
    report = await check(make_checker, domain.name)
    assert code in codes(report)
    assert "CERT_VERIFIED" not in codes(report)
    assert report.grade[0] == "D"
    assert report.transport[0] is transport


async def test_unknown_ca(world: LocalInternet, make_checker: Callable[..., Checker]) -> None:
    """A certificate from a CA we do not trust: CERT_UNTRUSTED with OpenSSL's reason."""
    other = TestCA()
    peer = Peer("127.0.8.1", world.port, other)
    assert world.loop_thread is not None
    peer.start(world.loop_thread)
    name = world.unique_domain()
    world.dns.add_address(f"mx1.{name}", peer.ip)
    world.dns.add_mx(name, 10, f"mx1.{name}")
    peer.add_names(f"mx1.{name}")
    try:
        report = await check(make_checker, name)
        assert "CERT_UNTRUSTED" in codes(report)
        finding = next(f for f in report.findings if f.code == "CERT_UNTRUSTED")
        assert "self-signed certificate in certificate chain" in finding.message()
    finally:
        peer.stop()
        world.remove_domain(name)
        other.close()


async def test_expiring(make_domain: MakeDomain, checker_settings: Settings) -> None:
    """A certificate within the warning window: CERT_EXPIRING, grade C."""
    domain, _ = make_domain()
    checker_dict = checker_settings.checker.model_copy(update={"expiry_warning_days": 400})
    settings = checker_settings.model_copy(update={"checker": checker_dict})
    report = await Checker(settings).check_domain(domain.name)
    assert "CERT_EXPIRING" in codes(report)
    assert report.grade[0] == "C"


async def test_requiretls(make_domain: MakeDomain, make_checker: Callable[..., Checker]) -> None:
    """REQUIRETLS inside TLS is offered; advertised in plaintext is a warning."""
    good, _ = make_domain(PeerBehaviour(requiretls=True))
    bad, _ = make_domain(PeerBehaviour(requiretls=True, requiretls_in_plaintext=True))
    assert "REQUIRETLS_OFFERED" in codes(await check(make_checker, good.name))
    assert "REQUIRETLS_IN_PLAINTEXT" in codes(await check(make_checker, bad.name))


async def test_greeting_refused(
    make_domain: MakeDomain, make_checker: Callable[..., Checker]
) -> None:
    """A 554 greeting: SMTP_GREETING_REFUSED and no host takes mail."""
    domain, _ = make_domain(PeerBehaviour(greeting_fault=Fault("554 5.3.2 not now")))
    report = await check(make_checker, domain.name)
    assert {"SMTP_GREETING_REFUSED", "ALL_HOSTS_UNREACHABLE"} <= codes(report)
    assert report.transport[0] is Transport.UNDELIVERABLE


async def test_unreachable(make_domain: MakeDomain, make_checker: Callable[..., Checker]) -> None:
    """A host that is down: HOST_UNREACHABLE, ALL_HOSTS_UNREACHABLE, undeliverable."""
    domain, _ = make_domain(PeerBehaviour(down=True))
    report = await check(make_checker, domain.name)
    assert {"HOST_UNREACHABLE", "ALL_HOSTS_UNREACHABLE"} <= codes(report)
    assert report.grade[0] == "F"


async def test_hanging_host_is_bounded(
    make_domain: MakeDomain, make_checker: Callable[..., Checker]
) -> None:
    """A host that never answers is given up within the probe timeouts."""
    domain, _ = make_domain(PeerBehaviour(delay=60))
    started = time.monotonic()
    report = await check(make_checker, domain.name)
    assert time.monotonic() - started < 15
    assert "HOST_UNREACHABLE" in codes(report)


async def test_dns_findings(world: LocalInternet, fresh_peer: Callable[..., Peer],
                            make_checker: Callable[..., Checker]) -> None:
    """Null MX, NXDOMAIN, SERVFAIL, implicit MX, MX hosts without addresses (T36)."""
    null = world.add_domain(world.unique_domain(), null_mx=True)
    report = await check(make_checker, null.name)
    assert codes(report) == {"NULL_MX"} and report.grade[0] is None
    report = await check(make_checker, "no-such-domain.test")
    assert codes(report) == {"DOMAIN_NOT_FOUND"}
    broken = world.unique_domain()
    world.dns.add_mx(broken, 10, "mx.elsewhere.test")
    world.dns.set_rcode(broken, "SERVFAIL")
    assert "DNS_FAILURE" in codes(await check(make_checker, broken))
    world.dns.set_rcode(broken, None)
    peer = fresh_peer()
    implicit = world.add_domain(world.unique_domain(), implicit=peer)
    assert "IMPLICIT_MX" in codes(await check(make_checker, implicit.name))
    dangling = world.add_domain(world.unique_domain(), mx=[(10, "nowhere.dangling.test")])
    report = await check(make_checker, dangling.name)
    assert {"MX_HOST_NO_ADDRESS", "NO_MAIL_HOSTS"} <= codes(report)
    mixed = world.add_domain(world.unique_domain(), mx=[(10, peer), (20, "nowhere.dangling.test")])
    report = await check(make_checker, mixed.name)
    assert "MX_HOST_NO_ADDRESS" in codes(report) and "NO_MAIL_HOSTS" not in codes(report)


async def test_reverse_dns(world: LocalInternet, make_domain: MakeDomain,
                           make_checker: Callable[..., Checker]) -> None:
    """PTR present and forward-confirmed, not confirmed, and a greeting name that matches
    neither the PTR nor the certificate (T39)."""
    domain, peer = make_domain()
    world.dns.add_ptr(peer.ip, peer.hostname)
    assert "PTR_OK" in codes(await check(make_checker, domain.name))
    domain2, peer2 = make_domain()
    world.dns.add_ptr(peer2.ip, "unconfirmed.elsewhere.test")
    assert "PTR_NOT_CONFIRMED" in codes(await check(make_checker, domain2.name))
    domain3, _ = make_domain(PeerBehaviour(cert=CertKind.WRONG_NAME))
    assert "BANNER_NAME_MISMATCH" in codes(await check(make_checker, domain3.name))


def _tlsa(world: LocalInternet, host: str, usage: int, sel: int, mt: int, data: bytes,
          ad: bool = True) -> None:
    name = f"_25._tcp.{host}"
    world.dns.add_tlsa(name, usage, sel, mt, data)
    world.dns.set_ad(name, ad)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("match", "DANE_VALID"),
        ("match-full", "DANE_VALID"),
        ("mismatch", "DANE_MISMATCH"),
        ("insecure", "DANE_INSECURE"),
        ("pkix", "DANE_NO_USABLE"),
        ("servfail", "DANE_LOOKUP_FAILED"),
        ("ta-match", "DANE_VALID"),
        ("ta-match-full", "DANE_VALID"),
        ("ta-mismatch", "DANE_MISMATCH"),
        ("ta-wrong-name", "DANE_MISMATCH"),
        ("ta-expired", "DANE_MISMATCH"),
    ],
)
async def test_dane(world: LocalInternet, fresh_peer: Callable[..., Peer],
                    make_checker: Callable[..., Checker], case: str, code: str) -> None:
    """TLSA records: valid, mismatch, not DNSSEC-validated, unusable, failed lookup; DANE-TA
    (2 x x) checked on the chain the server sent, as delivery checks it (T17): the CA's
    key or certificate matches; another key does not; nor does a leaf with the wrong name
    or out of date under the right CA."""
    kind = {"ta-wrong-name": CertKind.WRONG_NAME, "ta-expired": CertKind.EXPIRED}.get(case)
    peer = fresh_peer(PeerBehaviour(cert=kind) if kind else None)
    domain = world.add_domain(world.unique_domain(), mx=[(10, peer)], ad=case != "insecure")
    host = domain.mx[0][1]
    assert peer.cert is not None
    if case == "match":
        _tlsa(world, host, 3, 1, 1, peer.cert.tlsa(1, 1))
    elif case == "match-full":
        _tlsa(world, host, 3, 0, 2, peer.cert.tlsa(0, 2))
    elif case == "mismatch":
        _tlsa(world, host, 3, 1, 1, b"\x01" * 32)
    elif case == "insecure":
        _tlsa(world, host, 3, 1, 1, peer.cert.tlsa(1, 1), ad=False)
    elif case == "pkix":
        _tlsa(world, host, 1, 1, 1, peer.cert.tlsa(1, 1))
    elif case == "servfail":
        world.dns.set_rcode(f"_25._tcp.{host}", "SERVFAIL")
    elif case in ("ta-match", "ta-wrong-name", "ta-expired"):
        _tlsa(world, host, 2, 1, 1, _ca_tlsa(world.ca, 1, 1))
    elif case == "ta-match-full":
        _tlsa(world, host, 2, 0, 1, _ca_tlsa(world.ca, 0, 1))
    elif case == "ta-mismatch":
        _tlsa(world, host, 2, 1, 1, b"\x02" * 32)
    report = await check(make_checker, domain.name)
    assert code in codes(report)
    assert "DANE_UNCHECKED" not in codes(report)
    if case in ("match", "ta-match"):
        assert report.grade[0] == "A" and report.transport[1] == "DANE"
    if case in ("mismatch", "ta-mismatch"):
        assert report.grade[0] == "F"


def _ca_tlsa(ca: TestCA, selector: int, matching: int) -> bytes:
    der = ca.der
    data = der if selector == 0 else x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(data).digest() if matching == 1 else hashlib.sha512(data).digest()


def test_dane_ta_without_recorded_chain_is_unchecked(ca: TestCA) -> None:
    """A probe without a recorded chain (a cache entry written before chains were kept):
    DANE-EE is still judged on the leaf's digests, DANE-TA is reported unchecked."""
    leaf = ca.issue(["mx.old.test"])
    probe = AddressProbe("mx.old.test", "127.0.0.1", 25, reachable=True, tls_ok=True,
                         certificate=CertificateFacts.from_der(leaf.der))
    ta = DaneFacts("_25._tcp.mx.old.test", (TLSARecordFacts(2, 1, 1, "ab" * 32),),
                   secure=True, host_secure=True)
    host = HostFacts("mx.old.test", 10, ("127.0.0.1",), probes=(probe,), dane=ta)
    facts = DomainFacts("old.test", hosts=(host,))
    assert "DANE_UNCHECKED" in {f.code for f in check_dane(facts, CheckOptions())}
    ee = DaneFacts(ta.name, (TLSARecordFacts(3, 1, 1, leaf.tlsa(1, 1).hex()),),
                   secure=True, host_secure=True)
    facts = DomainFacts("old.test", hosts=(replace(host, dane=ee),))
    assert "DANE_VALID" in {f.code for f in check_dane(facts, CheckOptions())}


POLICY = "version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n"


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("enforce", "MTA_STS_ENFORCED"),
        ("testing", "MTA_STS_TESTING"),
        ("none", "MTA_STS_NONE"),
        ("mx-mismatch", "MTA_STS_MX_MISMATCH"),
        ("cert-invalid", "MTA_STS_CERT_INVALID"),
        ("policy-cert", "MTA_STS_POLICY_CERT_INVALID"),
        ("redirect", "MTA_STS_POLICY_UNAVAILABLE"),
        ("not-found", "MTA_STS_POLICY_UNAVAILABLE"),
        ("syntax", "MTA_STS_POLICY_INVALID"),
        ("two-records", "MTA_STS_RECORD_INVALID"),
    ],
)
async def test_mta_sts(world: LocalInternet, make_domain: MakeDomain, policy_host: PolicyHost,
                       make_checker: Callable[..., Checker], case: str, code: str) -> None:
    """MTA-STS record and policy: each kind of problem, and an enforced consistent policy."""
    behaviour = PeerBehaviour(cert=CertKind.EXPIRED) if case == "cert-invalid" else None
    domain, _ = make_domain(behaviour)
    mx = domain.mx[0][1]
    mode = {"testing": "testing", "none": "none"}.get(case, "enforce")
    body = POLICY.format(mode=mode, mx="other.example.test" if case == "mx-mismatch" else mx)
    if case == "redirect":
        policy = Policy("", status=301, location="https://elsewhere.test/")
    elif case == "syntax":
        policy = Policy("mode: enforce\nmx: x.test\n")
    else:
        policy = Policy(body)
    cert = CertKind.EXPIRED if case == "policy-cert" else CertKind.VALID
    policy_host.publish(domain.name, policy, cert=cert)
    if case == "not-found":
        del policy_host.policies[f"mta-sts.{domain.name}"]
    if case == "two-records":
        world.dns.add_txt(f"_mta-sts.{domain.name}", "v=STSv1; id=2")
    report = await check(make_checker, domain.name)
    assert code in codes(report), codes(report)
    if case == "enforce":
        assert report.grade[0] == "A"
        assert report.to_dict()["protection"]["mta_sts_enforce"] is True


@pytest.mark.parametrize(
    ("record", "code"),
    [
        ("v=TLSRPTv1; rua=mailto:tlsrpt@example.test", "TLSRPT_OK"),
        ("v=TLSRPTv1; rua=ftp://example.test/", "TLSRPT_INVALID"),
        (None, "TLSRPT_ABSENT"),
    ],
)
async def test_tlsrpt(world: LocalInternet, make_domain: MakeDomain,
                      make_checker: Callable[..., Checker], record: str | None, code: str) -> None:
    """The TLS-RPT record: valid, invalid, absent."""
    domain, _ = make_domain()
    if record:
        world.dns.add_txt(f"_smtp._tls.{domain.name}", record)
    assert code in codes(await check(make_checker, domain.name))


async def test_sending_reverse_dns(world: LocalInternet, checker_settings: Settings) -> None:
    """T39: the sending address's PTR, its forward confirmation and the HELO name."""

    def settings(source: str | None, helo: str) -> Settings:
        delivery = checker_settings.delivery.model_copy(
            update={"source_address": source, "helo_hostname": helo}
        )
        return checker_settings.model_copy(update={"delivery": delivery})

    resolver = Resolver(checker_settings)
    helo = f"out.{world.unique_domain()}"
    world.dns.add_address(helo, "127.0.8.8")
    world.dns.add_ptr("127.0.8.8", helo)
    found = {f.code for f in await reverse_dns_findings(settings("127.0.8.8", helo), resolver)}
    assert found == {"SENDING_REVERSE_OK"}
    found = {f.code for f in await reverse_dns_findings(settings("127.0.8.9", helo), resolver)}
    assert found == {"SENDING_PTR_MISSING", "SENDING_HELO_NO_ADDRESS"}
    world.dns.add_ptr("127.0.8.10", "someone-else.test")
    found = {f.code for f in await reverse_dns_findings(settings("127.0.8.10", helo), resolver)}
    assert {"SENDING_PTR_NOT_CONFIRMED", "SENDING_HELO_MISMATCH"} <= found
    found = {f.code for f in await reverse_dns_findings(settings(None, helo), resolver)}
    assert found == {"SENDING_IP_UNKNOWN"}


async def test_sending_domain_adapter(checker_settings: Settings) -> None:
    """The domain module's findings keep code, texts and severity; absent module is said."""
    items = [
        {"code": "DKIM_MISSING", "status": "missing", "required": True, "check": "dkim",
         "name": "s1._domainkey.example.test",
         "message": {"en": "No DKIM key", "ja": "DKIM 鍵がありません"},
         "remedy": {"en": "Publish it", "ja": "公開してください"}},
        {"code": "SPF_OK", "status": "ok", "required": True, "message": {"en": "SPF ok"}},
    ]
    found = adapt_findings("example.test", items)
    assert [f.code for f in found] == ["SENDING_DOMAIN", "SENDING_DOMAIN"]
    assert found[0].effective_severity.value == "error"
    assert found[0].message("ja") == "DKIM 鍵がありません"
    assert found[1].effective_severity.value == "ok"

    async def not_ours(domain: str) -> None:
        return None

    resolver = Resolver(checker_settings)
    assert await sending_findings("x.test", checker_settings, resolver, not_ours) is None
    forced = await sending_findings("x.test", checker_settings, resolver, None, force=True)
    assert forced is not None and "SENDING_SIDE_UNAVAILABLE" in {f.code for f in forced}
