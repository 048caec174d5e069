"""The registry of checks: small functions from observed facts to findings.

Each check has a name, a one-line description and a function ``(facts, options) ->
findings``; ``@check`` registers it in ``REGISTRY`` in definition order. Checks only read
``DomainFacts`` (gathered once by ``checker.service``), so running them costs no network
work and the CLI, the API and the web UI print the same findings for the same facts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from kakitome.checker.dnsfacts import dane_verdict
from kakitome.checker.facts import AddressProbe, DomainFacts, HostFacts
from kakitome.checker.findings import Finding
from kakitome.checker.mta_sts import mx_allowed

# Key sizes below these are weak (NIST SP 800-57; OpenSSL security level 2).
MIN_RSA_BITS = 2048
MIN_EC_BITS = 224
# Ciphers without forward secrecy or without AEAD; TLS 1.3 suites are all fine.
_WEAK_CIPHER_MARKS = ("RC4", "DES", "NULL", "EXPORT", "MD5", "anon", "ADH", "AECDH")


@dataclass(frozen=True, slots=True)
class CheckOptions:
    expiry_warning_days: int = 14
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


CheckFunction = Callable[[DomainFacts, CheckOptions], Iterable[Finding]]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    description: str
    run: CheckFunction


REGISTRY: list[Check] = []


def check(name: str, description: str) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check function under ``name``."""

    def register(fn: CheckFunction) -> CheckFunction:
        if any(c.name == name for c in REGISTRY):
            raise ValueError(f"check {name} registered twice")
        REGISTRY.append(Check(name, description, fn))
        return fn

    return register


def run_checks(facts: DomainFacts, options: CheckOptions | None = None) -> list[Finding]:
    """Every registered check over ``facts``, findings in registry order."""
    options = options or CheckOptions()
    findings: list[Finding] = []
    for registered in REGISTRY:
        findings.extend(registered.run(facts, options))
    return findings


def subject_of(probe: AddressProbe) -> str:
    return f"{probe.host}[{probe.address}]"


def _probes(facts: DomainFacts) -> Iterator[tuple[HostFacts, AddressProbe]]:
    for host in facts.hosts:
        for probe in host.probes:
            yield host, probe


def _talked(probe: AddressProbe) -> bool:
    return probe.reachable and probe.banner_code == 220 and probe.error is None


# -- DNS ------------------------------------------------------------------------------------


@check("dns", "The domain exists and publishes usable MX records (null MX, implicit MX).")
def check_dns(facts: DomainFacts, options: CheckOptions) -> Iterator[Finding]:
    if not facts.exists:
        yield Finding("DOMAIN_NOT_FOUND", facts.domain)
        return
    if facts.dns_error:
        yield Finding("DNS_FAILURE", facts.domain, {"error": facts.dns_error})
        return
    if facts.null_mx:
        yield Finding("NULL_MX", facts.domain)
        return
    if facts.implicit_mx:
        yield Finding("IMPLICIT_MX", facts.domain)
    with_address = {h.name for h in facts.hosts if h.addresses}
    for _, name in facts.mx_published:
        if name not in with_address:
            yield Finding("MX_HOST_NO_ADDRESS", name)
    if not with_address:
        yield Finding("NO_MAIL_HOSTS", facts.domain)


# -- SMTP -----------------------------------------------------------------------------------


@check("smtp", "Each MX address is reachable and greets with 220.")
def check_smtp(facts: DomainFacts, options: CheckOptions) -> Iterator[Finding]:
    probes = list(_probes(facts))
    for _, probe in probes:
        subject = subject_of(probe)
        if not probe.reachable or (probe.error is not None and probe.banner_code is None):
            yield Finding("HOST_UNREACHABLE", subject, {"port": probe.port, "error": probe.error})
        elif probe.banner_code != 220:
            yield Finding("SMTP_GREETING_REFUSED", subject, {"banner": probe.banner})
        elif probe.error is not None:
            yield Finding(
                "HOST_UNREACHABLE", subject, {"port": probe.port, "error": probe.error}
            )
        else:
            yield Finding(
                "SMTP_OK",
                subject,
                {"banner": probe.banner, "extensions": ", ".join(probe.extensions) or "none"},
            )
    if probes and not any(_talked(p) for _, p in probes):
        yield Finding("ALL_HOSTS_UNREACHABLE", facts.domain)


# -- TLS ------------------------------------------------------------------------------------


@check("starttls", "STARTTLS is offered and a TLS session can be set up; the cipher is strong.")
def check_starttls(facts: DomainFacts, options: CheckOptions) -> Iterator[Finding]:
    for _, probe in _probes(facts):
        if not _talked(probe):
            continue
        subject = subject_of(probe)
        if not probe.starttls_offered:
            yield Finding("STARTTLS_NOT_OFFERED", subject)
        elif not probe.tls_ok:
            yield Finding("STARTTLS_FAILED", subject, {"error": probe.tls_error})
        else:
            yield Finding(
                "STARTTLS_OK", subject, {"version": probe.tls_version, "cipher": probe.cipher}
            )
            cipher = probe.cipher or ""
            weak_mark = any(mark in cipher for mark in _WEAK_CIPHER_MARKS)
            no_fs = probe.tls_version != "TLSv1.3" and not cipher.startswith(("ECDHE", "DHE"))
            no_aead = probe.tls_version != "TLSv1.3" and not any(
                a in cipher for a in ("GCM", "CHACHA20", "CCM")
            )
            if weak_mark or no_fs or no_aead:
                yield Finding("WEAK_CIPHER", subject, {"cipher": cipher})


@check("tls-versions", "TLS 1.2 and 1.3 are accepted; TLS 1.0 and 1.1 are not.")
def check_versions(facts: DomainFacts, options: CheckOptions) -> Iterator[Finding]:
    for _, probe in _probes(facts):
        if not probe.versions:
            continue
        subject = subject_of(probe)
        accepted = [v.version for v in probe.versions if v.accepted]
        legacy = [v for v in accepted if v in ("TLSv1", "TLSv1.1")]
        if legacy:
            yield Finding("TLS_LEGACY_VERSION", subject, {"versions": ", ".join(legacy)})
        if accepted and not any(v in ("TLSv1.2", "TLSv1.3") for v in accepted):
            yield Finding("TLS_NO_MODERN_VERSION", subject, {"version": accepted[-1]})
        elif accepted and "TLSv1.3" not in accepted:
            yield Finding("TLS13_NOT_SUPPORTED", subject)


@check("certificate", "The certificate chains to a trusted CA, names the MX host, is in date "
       "and has a strong key.")
def check_certificate(facts: DomainFacts, options: CheckOptions) -> Iterator[Finding]:
    for _, probe in _probes(facts):
        cert = probe.certificate
        if not probe.tls_ok or cert is None:
            continue
        subject = subject_of(probe)
        not_after = dt.datetime.fromisoformat(cert.not_after)
        not_before = dt.datetime.fromisoformat(cert.not_before)
        days_left = (not_after - options.now).days
        dates = {"not_after": cert.not_after[:10], "not_before": cert.not_before[:10]}
        problem = False
        if not_after <= options.now:
            yield Finding("CERT_EXPIRED", subject, dates)
            problem = True
        elif not_before > options.now:
            yield Finding("CERT_NOT_YET_VALID", subject, dates)
            problem = True
        elif days_left < options.expiry_warning_days:
            yield Finding("CERT_EXPIRING", subject, {**dates, "days_left": days_left})
        if cert.self_signed:
            yield Finding("CERT_SELF_SIGNED", subject)
            problem = True
        elif not probe.chain_verified and not problem:
            yield Finding("CERT_UNTRUSTED", subject, {"error": probe.verify_error})
            problem = True
        if not probe.name_matched:
            yield Finding(
                "CERT_NAME_MISMATCH",
                subject,
                {"names": ", ".join(cert.names[:5]) or "no names", "host": probe.host},
            )
            problem = True
        weak = (cert.key_type in ("RSA", "DSA") and cert.key_bits < MIN_RSA_BITS) or (
            cert.key_type == "EC" and cert.key_bits < MIN_EC_BITS
        )
        if weak:
            yield Finding(
                "CERT_WEAK_KEY", subject, {"key_type": cert.key_type, "key_bits": cert.key_bits}
            )
            problem = True
        if not problem and probe.chain_verified:
            yield Finding(
                "CERT_VERIFIED", subject, {"name": probe.name_matched, "days_left": days_left}
            )


@check("requiretls", "REQUIRETLS (RFC 8689) is offered inside TLS, and only there.")
def check_requiretls(facts: DomainFacts, options: CheckOptions) -> Iterator[Finding]:
    for host in facts.hosts:
        done = [p for p in host.probes if p.tls_ok]
        if done:
            code = "REQUIRETLS_OFFERED" if done[0].requiretls else "REQUIRETLS_NOT_OFFERED"
            yield Finding(code, host.name)
        if any("REQUIRETLS" in p.extensions for p in host.probes):
            yield Finding("REQUIRETLS_IN_PLAINTEXT", host.name)


@check("reverse-dns", "MX addresses have forward-confirmed reverse DNS, and the name the "
       "server greets with matches it or the certificate (T39).")
def check_reverse_dns(facts: DomainFacts, options: CheckOptions) -> Iterator[Finding]:
    for host in facts.hosts:
        by_address = {p.address: p for p in host.probes}
        for rev in host.reverse:
            if rev.error:
                continue
            if not rev.names:
                yield Finding("PTR_MISSING", rev.address)
            elif rev.confirmed_name is None:
                yield Finding("PTR_NOT_CONFIRMED", rev.address, {"names": ", ".join(rev.names)})
            else:
                yield Finding("PTR_OK", rev.address, {"name": rev.confirmed_name})
            probe = by_address.get(rev.address)
            if probe is None or not _talked(probe):
                continue
            shown = probe.ehlo_name or probe.banner_name
            cert_names = probe.certificate.names if probe.certificate else ()
            if shown and shown not in rev.names and not _name_in(shown, cert_names):
                yield Finding(
                    "BANNER_NAME_MISMATCH",
                    subject_of(probe),
                    {"banner_name": shown, "ptr": ", ".join(rev.names) or "none"},
                )


def _name_in(name: str, cert_names: Iterable[str]) -> bool:
    from kakitome.tls.contexts import dns_name_matches

    return any(dns_name_matches(pattern, name) for pattern in cert_names)


# -- DANE -----------------------------------------------------------------------------------


@check("dane", "TLSA records exist, are DNSSEC-validated and match the certificate.")
def check_dane(facts: DomainFacts, options: CheckOptions) -> Iterator[Finding]:
    for host in facts.hosts:
        dane = host.dane
        if dane is None:
            continue
        if dane.lookup_error:
            yield Finding("DANE_LOOKUP_FAILED", host.name, {"error": dane.lookup_error})
            continue
        if not dane.records:
            yield Finding("DANE_ABSENT", host.name)
            continue
        if not (dane.secure and dane.host_secure):
            yield Finding("DANE_INSECURE", host.name)
            continue
        if not dane.usable:
            yield Finding("DANE_NO_USABLE", host.name)
            continue
        verdicts = [dane_verdict(dane, p, now=options.now) for p in host.probes if p.tls_ok]
        if "mismatch" in verdicts:
            yield Finding("DANE_MISMATCH", host.name)
        elif verdicts and all(v == "match" for v in verdicts):
            yield Finding("DANE_VALID", host.name)
        elif "unchecked" in verdicts:
            yield Finding("DANE_UNCHECKED", host.name)


def dane_protected(host: HostFacts) -> bool:
    """Usable, secure TLSA records that match every certificate the host showed."""
    dane = host.dane
    if dane is None or not (dane.secure and dane.host_secure and dane.usable):
        return False
    verdicts = [dane_verdict(dane, p) for p in host.probes if p.tls_ok]
    return bool(verdicts) and all(v == "match" for v in verdicts)


# -- MTA-STS and TLS-RPT ---------------------------------------------------------------------


@check("mta-sts", "An MTA-STS policy is published, valid, enforced and consistent with the MX "
       "set and the certificates.")
def check_mta_sts(facts: DomainFacts, options: CheckOptions) -> Iterator[Finding]:
    sts = facts.mta_sts
    if sts is None or not facts.exists or facts.null_mx:
        return
    domain = facts.domain
    if not sts.present and not sts.record_error:
        yield Finding("MTA_STS_ABSENT", domain)
        return
    if sts.record_error:
        yield Finding("MTA_STS_RECORD_INVALID", domain, {"error": sts.record_error})
        return
    if sts.policy_cert_error:
        yield Finding("MTA_STS_POLICY_CERT_INVALID", domain, {"error": sts.policy_cert_error})
        return
    if sts.fetch_error:
        yield Finding("MTA_STS_POLICY_UNAVAILABLE", domain, {"error": sts.fetch_error})
        return
    if sts.policy_error:
        yield Finding("MTA_STS_POLICY_INVALID", domain, {"error": sts.policy_error})
        return
    if sts.mode == "none":
        yield Finding("MTA_STS_NONE", domain)
        return
    if sts.mode == "testing":
        yield Finding("MTA_STS_TESTING", domain)
    patterns = ", ".join(sts.mx_patterns)
    consistent = True
    for host in facts.hosts:
        if not mx_allowed(sts.mx_patterns, host.name):
            consistent = False
            yield Finding("MTA_STS_MX_MISMATCH", domain, {"host": host.name, "patterns": patterns})
            continue
        if sts.mode == "enforce" and any(
            p.tls_ok and not (p.chain_verified and p.name_matched) for p in host.probes
        ):
            consistent = False
            yield Finding("MTA_STS_CERT_INVALID", domain, {"host": host.name})
    if sts.mode == "enforce" and consistent:
        yield Finding("MTA_STS_ENFORCED", domain)


@check("tls-rpt", "A TLS-RPT record tells senders where to report TLS failures.")
def check_tlsrpt(facts: DomainFacts, options: CheckOptions) -> Iterator[Finding]:
    rpt = facts.tlsrpt
    if rpt is None or not facts.exists or facts.null_mx:
        return
    if rpt.error:
        yield Finding("TLSRPT_INVALID", facts.domain, {"error": rpt.error})
    elif not rpt.records:
        yield Finding("TLSRPT_ABSENT", facts.domain)
    else:
        yield Finding("TLSRPT_OK", facts.domain, {"rua": ", ".join(rpt.rua)})
