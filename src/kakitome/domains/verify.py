"""``domain verify``: query DNS and judge every record a sending domain needs.

Talks to: the DNS servers of ``settings.dns`` (or the system's), through an uncached
resolver so that a record published a minute ago is seen now; every query has
``settings.dns.timeout`` as its lifetime. Trusts: answers as data; nothing here needs
DNSSEC. A query that times out or fails (SERVFAIL, unreachable) makes the whole check raise
``DomainDNSError``: a report built on missing answers would send people to fix records
that are fine.

Each check gives ``Finding`` values with a ``code`` (``dkim_mismatch``,
``spf_too_many_lookups``, ...), a ``status`` (``ok``, ``missing``, ``wrong``,
``warning``), whether it is ``required`` for the domain to count as verified, what was
expected and found, and, when not ok, a remedy in plain words, in English and Japanese.
The checks use the project's own SPF (RFC 7208) and DMARC (RFC 9989) engines from
``kakitome.auth``:

- ``dkim``: each published key's TXT record exists and carries our public key;
- ``spf``: the From domain has one SPF record, within 10 DNS-querying terms, that passes
  for every sending IP (or names our include);
- ``return_path_mx`` / ``return_path_spf``: the return-path domain's MX points at our bounce
  host and its SPF passes for our IPs;
- ``return_path_alignment``: the return-path domain aligns with the From domain under the
  DMARC record's ``aspf``;
- ``dmarc`` / ``dmarc_alignment``: a DMARC policy is found (tree walk) and mail as we
  send it would pass it; reports come to us;
- ``ptr``: each sending IP has a PTR whose name resolves back to it;
- ``bulk_sender``: Gmail's and Yahoo's requirements for bulk senders (SPF and DKIM pass,
  DMARC published and aligned, forward-confirmed PTR; we always offer TLS);
- ``mta_sts`` / ``tls_rpt``: receiving-side records, optional.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.asyncresolver
import dns.nameserver

from kakitome.auth.dkim_verify import parse_tag_list
from kakitome.auth.dmarc import (
    DMARCRecord,
    TreeWalk,
    check_dmarc_async,
    is_aligned,
    organizational_domain_steps,
    parse_dmarc_record,
    tree_walk_steps,
)
from kakitome.auth.dnsio import AsyncLookup, DNSTemporaryError, dnspython_lookup, run_async
from kakitome.auth.spf import MAX_DNS_MECHANISMS, SPFResult, check_host_async
from kakitome.config import Settings
from kakitome.dns.resolver import parse_nameserver
from kakitome.domains.names import DomainName
from kakitome.domains.records import (
    dmarc_rua,
    return_path_mx_host,
    spf_mechanisms,
)
from kakitome.domains.repository import ACTIVE, PENDING, RETIRING, DomainRow
from kakitome.domains.texts import TEXTS
from kakitome.errors import KakitomeError

__all__ = [
    "OK",
    "DomainDNSError",
    "Finding",
    "Verification",
    "resolver_lookup",
    "verify_domain",
]

OK = "ok"
MISSING = "missing"
WRONG = "wrong"
WARNING = "warning"

VERIFIED = "verified"
FAILING = "failing"

# An address from TEST-NET-1 (RFC 5737): no SPF record should authorise it, so evaluating
# the record for it walks every include, which is how the 10-lookup limit is found.
_PROBE_IP = "192.0.2.254"


class DomainDNSError(KakitomeError):
    """DNS did not answer (timeout, SERVFAIL): the domain could not be checked now."""


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    code: str
    status: str
    required: bool
    name: str | None
    en: str
    ja: str
    remedy_en: str = ""
    remedy_ja: str = ""
    expected: str | None = None
    found: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "code": self.code,
            "status": self.status,
            "required": self.required,
            "name": self.name,
            "expected": self.expected,
            "found": list(self.found),
            "message": {"en": self.en, "ja": self.ja},
            "remedy": {"en": self.remedy_en, "ja": self.remedy_ja} if not self.ok else None,
        }


@dataclass(frozen=True, slots=True)
class Verification:
    domain: DomainName
    checked_at: float
    findings: tuple[Finding, ...]
    # Selectors whose published record carries our key (a rotation may switch to them).
    published_selectors: frozenset[str] = field(default_factory=frozenset)

    @property
    def state(self) -> str:
        return VERIFIED if all(f.ok for f in self.findings if f.required) else FAILING

    def failing_codes(self) -> list[str]:
        return [f.code for f in self.findings if f.required and not f.ok]

    def by_code(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.code == code]

    def to_dict(self) -> dict[str, Any]:
        counts = {s: 0 for s in (OK, MISSING, WRONG, WARNING)}
        for finding in self.findings:
            counts[finding.status] += 1
        return {
            "domain": self.domain.ascii,
            "unicode": self.domain.unicode,
            "state": self.state,
            "checked_at": self.checked_at,
            "summary": counts,
            "findings": [f.to_dict() for f in self.findings],
        }


def resolver_lookup(settings: Settings) -> AsyncLookup:
    """An uncached ``AsyncLookup`` on the configured nameservers."""
    config = settings.dns
    if config.nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        servers: list[str | dns.nameserver.Nameserver] = []
        for entry in config.nameservers:
            host, port = parse_nameserver(entry)
            servers.append(dns.nameserver.Do53Nameserver(host, port))
        resolver.nameservers = servers
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = config.timeout
    resolver.timeout = min(config.timeout, 2.0)
    resolver.cache = None
    return dnspython_lookup(resolver)


class _Lookup:
    """Memoises answers for one verification and remembers the first DNS failure."""

    def __init__(self, lookup: AsyncLookup) -> None:
        self._lookup = lookup
        self._answers: dict[tuple[str, str], Sequence[str]] = {}
        self.failure: DNSTemporaryError | None = None

    async def __call__(self, name: str, rdtype: str) -> Sequence[str]:
        key = (name.lower().rstrip("."), rdtype)
        if key in self._answers:
            return self._answers[key]
        try:
            answer = await self._lookup(*key)
        except DNSTemporaryError as exc:
            if self.failure is None:
                self.failure = exc
            raise
        self._answers[key] = answer
        return answer

    def check(self) -> None:
        if self.failure is not None:
            raise DomainDNSError(
                f"DNS did not answer: {self.failure}. Nothing was judged; try again, and "
                "check that the nameservers (dns.nameservers) answer"
            )


def _finding(
    check: str,
    code: str,
    status: str,
    required: bool,
    name: str | None,
    *,
    text: str | None = None,
    expected: str | None = None,
    found: Sequence[str] = (),
    **fields: object,
) -> Finding:
    """A finding with its texts from ``TEXTS[text or code]`` filled with ``fields``."""
    texts = TEXTS[text or code]
    values = {"name": name, "expected": expected, "found": ", ".join(found), **fields}
    return Finding(
        check,
        code,
        status,
        required,
        name,
        texts.en.format(**values),
        texts.ja.format(**values),
        texts.remedy_en.format(**values),
        texts.remedy_ja.format(**values),
        expected,
        tuple(found),
    )


async def verify_domain(
    domain: DomainName,
    row: DomainRow,
    settings: Settings,
    lookup: AsyncLookup,
    *,
    now: float,
) -> Verification:
    """Every check for ``row``; ``DomainDNSError`` when DNS fails to answer."""
    dns_ = _Lookup(lookup)
    checker = _Checker(domain, row, settings, dns_)
    findings = await checker.run()
    dns_.check()
    return Verification(domain, now, tuple(findings), frozenset(checker.published))


class _Checker:
    def __init__(
        self, domain: DomainName, row: DomainRow, settings: Settings, lookup: _Lookup
    ) -> None:
        self.domain = domain.ascii
        self.row = row
        self.rp = row.return_path
        self.settings = settings
        self.lookup = lookup
        self.ips = settings.domains.sending_ips
        self.helo = settings.delivery.helo_hostname
        self.published: set[str] = set()

    async def txt(self, name: str) -> list[str]:
        return list(await self.lookup(name, "TXT"))

    async def run(self) -> list[Finding]:
        out: list[Finding] = []
        dkim = await self.dkim()
        spf = await self.spf("spf", self.domain, "~all")
        rp_mx = await self.return_path_mx()
        rp_spf = await self.spf("return_path_spf", self.rp, "-all")
        walk, dmarc = await self.dmarc()
        rp_alignment = await self.return_path_alignment(walk)
        dkim_ok = any(f.ok for f in dkim if f.required)
        rp_spf_ok = bool(rp_spf) and all(f.ok for f in rp_spf)
        alignment = await self.dmarc_alignment(walk, dkim_ok, rp_spf_ok)
        ptr = await self.ptr()
        out = [*dkim, *spf, *rp_mx, *rp_spf, *dmarc, *rp_alignment, *alignment, *ptr]
        out.append(self.bulk_sender(dkim_ok, rp_spf_ok, walk, alignment, ptr))
        out += await self.receiving()
        return out

    # -- DKIM ---------------------------------------------------------------------------

    async def dkim(self) -> list[Finding]:
        out = []
        for key in self.row.keys_in(ACTIVE, PENDING, RETIRING):
            name = f"{key.selector}._domainkey.{self.domain}"
            required = key.state == ACTIVE
            expected = parse_tag_list(key.public_txt)
            try:
                answers = await self.txt(name)
            except DNSTemporaryError:
                continue
            records = [a for a in answers if "p=" in a]
            fields = {"label": f"{key.key_type} key {key.selector}", "domain": self.domain}
            if not records:
                out.append(
                    _finding(
                        "dkim",
                        "dkim_missing",
                        MISSING,
                        required,
                        name,
                        expected=key.public_txt,
                        **fields,
                    )
                )
                continue
            matches = False
            for record in records:
                try:
                    tags = parse_tag_list(record)
                except ValueError:
                    continue
                if tags.get("p") == expected["p"] and tags.get("k", "rsa") == expected["k"]:
                    matches = True
            if matches:
                self.published.add(key.selector)
                out.append(_finding("dkim", "dkim_ok", OK, required, name, found=records, **fields))
            else:
                out.append(
                    _finding(
                        "dkim",
                        "dkim_mismatch",
                        WRONG,
                        required,
                        name,
                        expected=key.public_txt,
                        found=records,
                        **fields,
                    )
                )
        return out

    # -- SPF ----------------------------------------------------------------------------

    async def spf(self, check: str, name: str, ending: str) -> list[Finding]:
        wanted = " ".join(spf_mechanisms(self.settings))
        expected = f"v=spf1 {wanted} {ending}"

        def finding(kind: str, status: str, found: Sequence[str] = (), **fields: object) -> Finding:
            return _finding(
                check,
                f"{check}_{kind}",
                status,
                True,
                name,
                text=f"spf_{kind}",
                expected=expected,
                found=found,
                wanted=wanted,
                **fields,
            )

        try:
            answers = await self.txt(name)
        except DNSTemporaryError:
            return []
        records = [a for a in answers if a.lower() == "v=spf1" or a[:7].lower() == "v=spf1 "]
        if not records:
            return [finding("missing", MISSING)]
        if len(records) > 1:
            return [finding("multiple", WRONG, count=len(records), found=records)]
        probe = await check_host_async(
            _PROBE_IP, f"postmaster@{name}", self.helo, self.lookup, domain=name
        )
        if probe.result is SPFResult.TEMPERROR:
            return []
        if probe.result is SPFResult.PERMERROR:
            if f"more than {MAX_DNS_MECHANISMS}" in probe.reason:
                return [finding("too_many_lookups", WRONG, found=records)]
            return [finding("invalid", WRONG, reason=probe.reason, found=records)]
        uncovered: list[str] = []
        for ip in self.ips:
            outcome = await check_host_async(
                ip, f"postmaster@{name}", self.helo, self.lookup, domain=name
            )
            if outcome.result is SPFResult.TEMPERROR:
                return []
            if outcome.result is not SPFResult.PASS:
                uncovered.append(f"{ip} ({outcome.result.value})")
        include = self.settings.domains.spf_include
        if not self.ips and include and f"include:{include.lower()}" not in records[0].lower():
            uncovered.append(f"include:{include}")
        if uncovered:
            return [
                finding("not_covering_ip", WRONG, uncovered=", ".join(uncovered), found=records)
            ]
        return [finding("ok", OK, found=records)]

    # -- return path ----------------------------------------------------------------------

    async def return_path_mx(self) -> list[Finding]:
        host = return_path_mx_host(self.settings).lower()
        try:
            exchanges = [e.lower() for e in await self.lookup(self.rp, "MX")]
        except DNSTemporaryError:
            return []
        check, expected = "return_path_mx", f"10 {host}"
        if not exchanges:
            return [
                _finding(
                    check,
                    "return_path_mx_missing",
                    MISSING,
                    True,
                    self.rp,
                    expected=expected,
                    host=host,
                )
            ]
        if host not in exchanges:
            return [
                _finding(
                    check,
                    "return_path_mx_wrong",
                    WRONG,
                    True,
                    self.rp,
                    expected=expected,
                    found=exchanges,
                    host=host,
                )
            ]
        return [_finding(check, "return_path_mx_ok", OK, True, self.rp, found=exchanges, host=host)]

    async def return_path_alignment(self, walk: TreeWalk | None) -> list[Finding]:
        if walk is None:
            return []
        record = walk.policy[1] if walk.policy else None
        mode = record.aspf if record is not None else "r"
        try:
            org_of = {
                self.domain: walk.organizational_domain,
                self.rp: await run_async(organizational_domain_steps(self.rp), self.lookup),
            }
        except DNSTemporaryError:
            return []
        check = "return_path_alignment"
        if is_aligned(self.rp, self.domain, mode, org_of):
            return [
                _finding(
                    check,
                    "return_path_aligned",
                    OK,
                    True,
                    self.rp,
                    domain=self.domain,
                    mode="strict" if mode == "s" else "relaxed",
                )
            ]
        why = (
            "the DMARC record asks for strict SPF alignment, aspf=s"
            if mode == "s"
            else "different organisational domains"
        )
        return [
            _finding(
                check, "return_path_not_aligned", WRONG, True, self.rp, domain=self.domain, why=why
            )
        ]

    # -- DMARC --------------------------------------------------------------------------

    async def dmarc(self) -> tuple[TreeWalk | None, list[Finding]]:
        name = f"_dmarc.{self.domain}"
        rua = dmarc_rua(self.settings, self.rp)
        try:
            walk = await run_async(tree_walk_steps(self.domain), self.lookup)
            answers = await self.txt(name)
        except DNSTemporaryError:
            return None, []
        here = [r for r in (parse_dmarc_record(a) for a in answers) if r is not None]
        if len(here) > 1:
            return walk, [
                _finding(
                    "dmarc", "dmarc_multiple", WRONG, True, name, count=len(here), found=answers
                )
            ]
        if walk.policy is None:
            return walk, [
                _finding(
                    "dmarc",
                    "dmarc_missing",
                    MISSING,
                    True,
                    name,
                    expected=f"v=DMARC1; p=none; rua=mailto:{rua}",
                    domain=self.domain,
                )
            ]
        policy_domain, record = walk.policy
        out = [self._dmarc_policy(name, policy_domain, record, answers)]
        if f"mailto:{rua}".lower() not in (u.lower() for u in record.rua):
            out.append(
                _finding(
                    "dmarc", "dmarc_reports_not_to_us", WARNING, False, name, found=answers, rua=rua
                )
            )
        return walk, out

    def _dmarc_policy(
        self, name: str, policy_domain: str, record: DMARCRecord, answers: Sequence[str]
    ) -> Finding:
        where = "" if policy_domain == self.domain else f" (_dmarc.{policy_domain})"
        advice_en = advice_ja = ""
        if record.policy == "none":
            advice_en = (
                " You get reports, receivers take no action yet: move to "
                "p=quarantine, then p=reject, when the reports show only your mail."
            )
            advice_ja = (
                "レポートは届きますが、受信側はまだ何もしません。自分のメールだけと"
                "確認できたら p=quarantine、p=reject へ移行してください。"
            )
        return _finding(
            "dmarc",
            "dmarc_ok",
            OK,
            True,
            name,
            found=answers,
            where=where,
            policy=record.policy,
            advice_en=advice_en,
            advice_ja=advice_ja,
        )

    async def dmarc_alignment(
        self, walk: TreeWalk | None, dkim_ok: bool, rp_spf_ok: bool
    ) -> list[Finding]:
        if walk is None or walk.policy is None:
            return []
        outcome = await check_dmarc_async(
            self.domain,
            self.lookup,
            dkim_domains=[self.domain] if dkim_ok else [],
            spf_domain=self.rp,
            spf_pass=rp_spf_ok,
        )
        name = f"_dmarc.{self.domain}"
        if outcome.result == "pass":
            return [
                _finding("dmarc_alignment", "dmarc_aligned", OK, True, name, reason=outcome.reason)
            ]
        if outcome.result == "temperror":
            return []
        return [
            _finding(
                "dmarc_alignment",
                "dmarc_not_aligned",
                WRONG,
                True,
                name,
                domain=self.domain,
                rp=self.rp,
                policy=outcome.policy,
            )
        ]

    # -- PTR ----------------------------------------------------------------------------

    async def ptr(self) -> list[Finding]:
        if not self.ips:
            return [_finding("ptr", "ptr_unchecked", WARNING, False, None)]
        out = []
        for ip in self.ips:
            address = ipaddress.ip_address(ip)
            reverse = address.reverse_pointer
            try:
                names = list(await self.lookup(reverse, "PTR"))
            except DNSTemporaryError:
                continue
            if not names:
                out.append(
                    _finding(
                        "ptr",
                        "ptr_missing",
                        MISSING,
                        True,
                        reverse,
                        expected=self.helo,
                        ip=ip,
                        helo=self.helo,
                    )
                )
                continue
            confirmed = []
            for host in names[:10]:
                try:
                    found = await self.lookup(host, "A" if address.version == 4 else "AAAA")
                except DNSTemporaryError:
                    continue
                if any(ipaddress.ip_address(a) == address for a in found):
                    confirmed.append(host)
            if confirmed:
                out.append(_finding("ptr", "ptr_ok", OK, True, reverse, found=names, ip=ip))
            else:
                out.append(
                    _finding(
                        "ptr",
                        "ptr_not_confirmed",
                        WRONG,
                        True,
                        reverse,
                        expected=self.helo,
                        found=names,
                        ip=ip,
                        helo=self.helo,
                        first=names[0],
                    )
                )
        return out

    # -- bulk senders ---------------------------------------------------------------------

    def bulk_sender(
        self,
        dkim_ok: bool,
        rp_spf_ok: bool,
        walk: TreeWalk | None,
        alignment: list[Finding],
        ptr: list[Finding],
    ) -> Finding:
        unmet: list[tuple[str, str]] = []
        if not dkim_ok:
            unmet.append(("DKIM must pass", "DKIM の通過"))
        if not rp_spf_ok:
            unmet.append(
                ("SPF must pass for the envelope domain", "エンベロープドメインでの SPF の通過")
            )
        if walk is None or walk.policy is None:
            unmet.append(
                (
                    "a DMARC record (at least p=none) must exist",
                    "DMARC レコード（p=none 以上）の公開",
                )
            )
        elif not alignment or not all(f.ok for f in alignment):
            unmet.append(
                (
                    "the From domain must align with SPF or DKIM (DMARC pass)",
                    "From ドメインと SPF または DKIM のアライン（DMARC 通過）",
                )
            )
        if not ptr or not all(f.ok for f in ptr):
            unmet.append(
                (
                    "sending IPs need forward-confirmed PTR records",
                    "送信 IP の正引き・逆引きが一致する PTR",
                )
            )
        if unmet:
            return _finding(
                "bulk_sender",
                "bulk_sender_requirements_unmet",
                WRONG,
                False,
                None,
                unmet_en="; ".join(en for en, _ in unmet),
                unmet_ja="、".join(ja for _, ja in unmet),
            )
        return _finding("bulk_sender", "bulk_sender_ok", OK, False, None)

    # -- receiving ------------------------------------------------------------------------

    async def receiving(self) -> list[Finding]:
        out = []
        checks = (
            ("mta_sts", f"_mta-sts.{self.domain}", "v=stsv1", "MTA-STS", "v=STSv1; id=<date>"),
            (
                "tls_rpt",
                f"_smtp._tls.{self.domain}",
                "v=tlsrptv1",
                "TLS-RPT",
                "v=TLSRPTv1; rua=mailto:<address>",
            ),
        )
        for check, name, prefix, label, example in checks:
            try:
                answers = await self.txt(name)
            except DNSTemporaryError:
                continue
            if any(a.lower().replace(" ", "").startswith(prefix) for a in answers):
                out.append(
                    _finding(
                        check,
                        f"{check}_ok",
                        OK,
                        False,
                        name,
                        text="receiving_ok",
                        found=answers,
                        label=label,
                    )
                )
            else:
                out.append(
                    _finding(
                        check,
                        f"{check}_missing",
                        MISSING,
                        False,
                        name,
                        text="receiving_missing",
                        expected=example,
                        label=label,
                        domain=self.domain,
                    )
                )
        return out
