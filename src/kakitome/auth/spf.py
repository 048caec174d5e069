"""SPF ``check_host()`` per RFC 7208, on pluggable DNS (``kakitome.auth.dnsio``).

Talks to: DNS only, through the caller's lookup (TXT, A, AAAA, MX, PTR). Trusts: nothing
in the record beyond what RFC 7208 lets it say. Limits (RFC 7208 §4.6.4), each breach a
``permerror``: at most ``MAX_DNS_MECHANISMS`` (10) terms that query DNS (include, a, mx,
ptr, exists, redirect) per evaluation, at most ``MAX_VOID_LOOKUPS`` (2) lookups that find
nothing, at most 10 MX names per ``mx``; only the first 10 PTR names are looked at.

Results are RFC 7208's: none, neutral, pass, fail, softfail, temperror, permerror; a fail
carries an explanation (the ``exp=`` text, macro-expanded, or ``DEFAULT_EXPLANATION``).
The RFC 7208 test suite (openspf.org, 2014.04) runs in ``tests/auth/test_spf.py`` (T31).
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from kakitome.auth.dnsio import (
    AsyncLookup,
    DNSTemporaryError,
    Query,
    Step,
    SyncLookup,
    run_async,
    run_sync,
)

__all__ = [
    "DEFAULT_EXPLANATION",
    "MAX_DNS_MECHANISMS",
    "MAX_VOID_LOOKUPS",
    "SPFOutcome",
    "SPFResult",
    "check_host",
    "check_host_async",
    "spf_steps",
]

MAX_DNS_MECHANISMS = 10
MAX_VOID_LOOKUPS = 2
MAX_MX_NAMES = 10
MAX_PTR_NAMES = 10
DEFAULT_EXPLANATION = "the SPF record of %{o} does not authorise %{i} to send its mail"

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


class SPFResult(StrEnum):
    """RFC 7208 §2.6 results."""

    NONE = "none"
    NEUTRAL = "neutral"
    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class SPFOutcome:
    """The result of ``check_host`` with what led to it."""

    result: SPFResult
    domain: str  # the domain whose policy was checked
    explanation: str = ""  # only for fail
    reason: str = ""  # a plain-words account: the matching mechanism, or the error

    def __str__(self) -> str:
        return self.result.value


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


_QUALIFIERS = {"+": SPFResult.PASS, "-": SPFResult.FAIL, "~": SPFResult.SOFTFAIL,
               "?": SPFResult.NEUTRAL}  # fmt: skip
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9._-]*)=(.*)", re.S)
_MECHANISM = re.compile(r"([+~?-]?)([A-Za-z][A-Za-z0-9._-]*)(.*)", re.S)
_DUAL_CIDR = re.compile(r"(?:/(0|[1-9]\d{0,2}))?(?://(0|[1-9]\d{0,2}))?\Z")
_CIDR = re.compile(r"/(0|[1-9]\d{0,2})\Z")
_MACRO = re.compile(r"%(?:\{([A-Za-z])(\d*)(r?)([.\-+,/_=]*)\}|(.)|\Z)", re.S | re.I)
_TOPLABEL = re.compile(r"(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_MACRO_LETTERS = frozenset("slodipvh")
_EXP_LETTERS = _MACRO_LETTERS | frozenset("crt")
_URL_SAFE = "-._~"


@dataclass(frozen=True, slots=True)
class _Term:
    qualifier: SPFResult
    name: str  # lower-case mechanism name
    domain_spec: str | None
    cidr4: int
    cidr6: int
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    text: str


@dataclass(frozen=True, slots=True)
class _Record:
    terms: tuple[_Term, ...]
    redirect: str | None
    exp: str | None
    has_all: bool


def check_host(
    ip: str,
    mail_from: str,
    helo: str,
    lookup: SyncLookup,
    *,
    domain: str | None = None,
    receiver: str = "unknown",
    now: float | None = None,
) -> SPFOutcome:
    """RFC 7208 ``check_host()`` with a blocking lookup.

    ``mail_from`` is the MAIL FROM address (empty for bounces: the HELO name is checked
    then, as postmaster@helo). ``domain`` overrides the domain checked (for the HELO check,
    pass ``domain=helo``). ``receiver`` is our host name for the ``%{r}`` macro.
    """
    return run_sync(spf_steps(ip, mail_from, helo, domain=domain, receiver=receiver,
                              now=now), lookup)  # fmt: skip


async def check_host_async(
    ip: str,
    mail_from: str,
    helo: str,
    lookup: AsyncLookup,
    *,
    domain: str | None = None,
    receiver: str = "unknown",
    now: float | None = None,
) -> SPFOutcome:
    """``check_host`` with a coroutine lookup."""
    steps = spf_steps(ip, mail_from, helo, domain=domain, receiver=receiver, now=now)
    return await run_async(steps, lookup)


def spf_steps(
    ip: str,
    mail_from: str,
    helo: str,
    *,
    domain: str | None = None,
    receiver: str = "unknown",
    now: float | None = None,
) -> Step[SPFOutcome]:
    """The evaluation as a ``dnsio`` step."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    sender = mail_from or f"postmaster@{helo}"
    local, at, sender_domain = sender.rpartition("@")
    if not at:
        local, sender_domain = "postmaster", sender
    if not local:
        local = "postmaster"
    evaluation = _Evaluation(
        ip=address, upper_hex=ip.isupper(), local=local, sender_domain=sender_domain, helo=helo,
        receiver=receiver, now=int(time.time() if now is None else now),
    )  # fmt: skip
    target = domain if domain is not None else sender_domain
    return (yield from evaluation.run(target))


class _Evaluation:
    """One top-level check_host(): the counters are shared by includes and redirects."""

    def __init__(
        self,
        *,
        ip: IPAddress,
        upper_hex: bool,
        local: str,
        sender_domain: str,
        helo: str,
        receiver: str,
        now: int,
    ) -> None:
        self.ip = ip
        self.upper_hex = upper_hex
        self.local = local
        self.sender_domain = sender_domain
        self.helo = helo
        self.receiver = receiver
        self.now = now
        self.dns_mechanisms = 0
        self.void_lookups = 0
        self.validated_ptr: str | None = None

    def run(self, domain: str) -> Step[SPFOutcome]:
        try:
            result, explanation, reason = yield from self.check_host(domain)
        except _PermError as exc:
            return SPFOutcome(SPFResult.PERMERROR, domain, reason=str(exc))
        except _TempError as exc:
            return SPFOutcome(SPFResult.TEMPERROR, domain, reason=str(exc))
        return SPFOutcome(result, domain, explanation, reason)

    # -- DNS -------------------------------------------------------------------------------

    def query(self, name: str, rdtype: str) -> Step[Sequence[str]]:
        try:
            answer = yield Query(name, rdtype)
        except DNSTemporaryError as exc:
            raise _TempError(f"DNS lookup failed: {exc}") from None
        return answer

    def count_mechanism(self) -> None:
        self.dns_mechanisms += 1
        if self.dns_mechanisms > MAX_DNS_MECHANISMS:
            raise _PermError(f"more than {MAX_DNS_MECHANISMS} DNS-querying terms")

    def count_void(self, answer: Sequence[object]) -> None:
        if not answer:
            self.void_lookups += 1
            if self.void_lookups > MAX_VOID_LOOKUPS:
                raise _PermError(f"more than {MAX_VOID_LOOKUPS} void DNS lookups")

    def addresses(self, name: str) -> Step[list[IPAddress]]:
        rdtype = "A" if self.ip.version == 4 else "AAAA"
        answer = yield from self.query(name, rdtype)
        out: list[IPAddress] = []
        for text in answer:
            try:
                out.append(ipaddress.ip_address(text))
            except ValueError:
                continue
        return out

    # -- check_host ------------------------------------------------------------------------

    def check_host(self, domain: str) -> Step[tuple[SPFResult, str, str]]:
        domain = domain.rstrip(".") if domain.endswith(".") else domain
        if not _valid_domain(domain):
            return SPFResult.NONE, "", f"{domain!r} is not a valid domain name"
        answer = yield from self.query(domain, "TXT")
        records = [r for r in answer if r[:7].lower() == "v=spf1 " or r.lower() == "v=spf1"]
        if not records:
            return SPFResult.NONE, "", f"no SPF record at {domain}"
        if len(records) > 1:
            raise _PermError(f"{domain} has {len(records)} SPF records")
        record = _parse_record(records[0])

        for term in record.terms:
            matched = yield from self.evaluate(term, domain)
            if matched:
                result = term.qualifier
                explanation = ""
                if result is SPFResult.FAIL:
                    explanation = yield from self.explain(record.exp, domain)
                return result, explanation, f"{domain}: matched {term.text}"

        if record.redirect is not None and not record.has_all:
            self.count_mechanism()
            target = yield from self.expand_domain(record.redirect, domain)
            if not _valid_domain(target):
                raise _PermError(f"redirect to an invalid domain {target!r}")
            result, explanation, reason = yield from self.check_host(target)
            if result is SPFResult.NONE:
                raise _PermError(f"redirect target {target} has no SPF record")
            return result, explanation, reason
        return SPFResult.NEUTRAL, "", f"{domain}: no mechanism matched"

    def evaluate(self, term: _Term, domain: str) -> Step[bool]:
        name = term.name
        if name == "all":
            return True
        if name == "ip4" or name == "ip6":
            assert term.network is not None
            return self.ip.version == term.network.version and self.ip in term.network
        self.count_mechanism()
        target = domain
        if term.domain_spec is not None:
            target = yield from self.expand_domain(term.domain_spec, domain)
        if name == "include":
            if not _valid_domain(target):
                raise _PermError(f"include of an invalid domain {target!r}")
            result, _, _ = yield from self.check_host(target)
            if result is SPFResult.PASS:
                return True
            if result is SPFResult.NONE:
                raise _PermError(f"included domain {target} has no SPF record")
            return False
        if not _valid_domain(target):
            return False
        if name == "a":
            addresses = yield from self.addresses(target)
            self.count_void(addresses)
            return self.in_network(addresses, term)
        if name == "mx":
            exchanges = yield from self.query(target, "MX")
            self.count_void(exchanges)
            if len(exchanges) > MAX_MX_NAMES:
                raise _PermError(f"{target} has more than {MAX_MX_NAMES} MX records")
            for exchange in exchanges:
                if not exchange or not _valid_domain(exchange):
                    continue
                addresses = yield from self.addresses(exchange)
                if self.in_network(addresses, term):
                    return True
            return False
        if name == "ptr":
            validated = yield from self.validated_names()
            target = target.lower()
            return any(n == target or n.endswith("." + target) for n in validated)
        if name == "exists":
            answer = yield from self.query(target, "A")
            self.count_void(answer)
            return bool(answer)
        raise _PermError(f"unknown mechanism {term.text}")  # pragma: no cover (parsed away)

    def in_network(self, addresses: Sequence[IPAddress], term: _Term) -> bool:
        prefix = term.cidr4 if self.ip.version == 4 else term.cidr6
        for address in addresses:
            if address.version != self.ip.version:
                continue
            network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
            if self.ip in network:
                return True
        return False

    def validated_names(self) -> Step[list[str]]:
        """RFC 7208 §5.5: PTR names of the client that resolve back to it (first 10)."""
        try:
            names = yield from self.query(self.ip.reverse_pointer, "PTR")
        except _TempError:
            return []
        validated: list[str] = []
        for name in list(names)[:MAX_PTR_NAMES]:
            name = name.rstrip(".").lower()
            if not _valid_domain(name):
                continue
            try:
                addresses = yield from self.addresses(name)
            except _TempError:
                continue
            if self.ip in addresses:
                validated.append(name)
        return validated

    # -- explanation -----------------------------------------------------------------------

    def explain(self, exp: str | None, domain: str) -> Step[str]:
        default = yield from self.expand(DEFAULT_EXPLANATION, domain, explanation=True)
        if exp is None:
            return default
        try:
            target = yield from self.expand_domain(exp, domain)
            if not _valid_domain(target):
                return default
            answer = yield from self.query(target, "TXT")
            if len(answer) != 1 or not answer[0].isascii():
                return default
            return (yield from self.expand(answer[0], domain, explanation=True))
        except (_PermError, _TempError):
            return default

    # -- macros ----------------------------------------------------------------------------

    def expand_domain(self, spec: str, domain: str) -> Step[str]:
        """Expand a domain-spec; a result over 253 octets loses labels on the left."""
        name = yield from self.expand(spec, domain)
        name = name.rstrip(".") if name.endswith(".") else name
        while len(name) > 253 and "." in name:
            name = name.split(".", 1)[1]
        return name

    def expand(self, text: str, domain: str, *, explanation: bool = False) -> Step[str]:
        letters = _EXP_LETTERS if explanation else _MACRO_LETTERS
        out: list[str] = []
        pos = 0
        for match in _MACRO.finditer(text):
            out.append(text[pos : match.start()])
            pos = match.end()
            letter, digits, reverse, delimiters, single = match.groups()
            if letter is None:
                if single == "%":
                    out.append("%")
                elif single == "_":
                    out.append(" ")
                elif single == "-":
                    out.append("%20")
                else:
                    raise _PermError(f"bad macro in {text!r}")
                continue
            if letter.lower() not in letters:
                raise _PermError(f"unknown macro letter %{{{letter}}}")
            value = yield from self.macro_value(letter.lower(), domain)
            parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
            if reverse:
                parts.reverse()
            if digits:
                count = int(digits)
                if count == 0:
                    raise _PermError("macro digit transformer of 0")
                parts = parts[-count:]
            value = ".".join(parts)
            if letter.isupper():
                value = urllib.parse.quote(value, safe=_URL_SAFE)
            out.append(value)
        out.append(text[pos:])
        return "".join(out)

    def macro_value(self, letter: str, domain: str) -> Step[str]:
        if letter == "s":
            return f"{self.local}@{self.sender_domain}"
        if letter == "l":
            return self.local
        if letter == "o":
            return self.sender_domain
        if letter == "d":
            return domain
        if letter == "i":
            if self.ip.version == 4:
                return str(self.ip)
            # RFC 7208 leaves the case of the nibbles open (DNS ignores it); we keep the
            # case the address was given in, as the RFC 7208 test suite expects.
            nibbles = self.ip.exploded.replace(":", "")
            return ".".join(nibbles.upper() if self.upper_hex else nibbles)
        if letter == "v":
            return "in-addr" if self.ip.version == 4 else "ip6"
        if letter == "h":
            return self.helo
        if letter == "c":
            return str(self.ip)
        if letter == "r":
            return self.receiver
        if letter == "t":
            return str(self.now)
        # p: a validated name, preferring one in the current domain (RFC 7208 §7.3).
        if self.validated_ptr is None:
            names = yield from self.validated_names()
            chosen = "unknown"
            for name in names:
                if name == domain.lower() or name.endswith("." + domain.lower()):
                    chosen = name
                    break
            else:
                if names:
                    chosen = names[0]
            self.validated_ptr = chosen
        return self.validated_ptr


# -- parsing --------------------------------------------------------------------------------


def _parse_record(record: str) -> _Record:
    """Parse a whole record first: any syntax error anywhere is a permerror (§4.6)."""
    if not record.isascii():
        raise _PermError("SPF record is not 7-bit ASCII")
    terms: list[_Term] = []
    redirect: str | None = None
    exp: str | None = None
    has_all = False
    for text in record.split(" ")[1:]:
        if not text:
            continue
        if not text.isprintable():
            raise _PermError(f"control character in term {text!r}")
        modifier = _MODIFIER.fullmatch(text)
        mechanism = _MECHANISM.fullmatch(text)
        if modifier and not (mechanism and mechanism.group(3)[:1] in (":", "/")):
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in ("redirect", "exp"):
                _check_domain_spec(value)
                if name == "redirect":
                    if redirect is not None:
                        raise _PermError("more than one redirect=")
                    redirect = value
                else:
                    if exp is not None:
                        raise _PermError("more than one exp=")
                    exp = value
            else:
                _check_macro_string(value)
            continue
        if mechanism is None:
            raise _PermError(f"unparseable term {text!r}")
        term = _parse_mechanism(text, mechanism)
        has_all = has_all or term.name == "all"
        terms.append(term)
    return _Record(tuple(terms), redirect, exp, has_all)


def _parse_mechanism(text: str, match: re.Match[str]) -> _Term:
    qualifier = _QUALIFIERS[match.group(1) or "+"]
    name = match.group(2).lower()
    rest = match.group(3)
    domain_spec: str | None = None
    cidr4, cidr6 = 32, 128
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    if name == "all":
        if rest:
            raise _PermError(f"bad term {text!r}")
    elif name in ("include", "exists"):
        if not rest.startswith(":") or not rest[1:]:
            raise _PermError(f"{name} needs a domain: {text!r}")
        domain_spec = rest[1:]
        _check_domain_spec(domain_spec)
    elif name in ("a", "mx"):
        cidr = _DUAL_CIDR.search(rest)
        assert cidr is not None
        spec = rest[: cidr.start()]
        if cidr.group(1) is not None:
            cidr4 = int(cidr.group(1))
        if cidr.group(2) is not None:
            cidr6 = int(cidr.group(2))
        if cidr4 > 32 or cidr6 > 128:
            raise _PermError(f"bad CIDR length in {text!r}")
        if spec:
            if not spec.startswith(":") or not spec[1:]:
                raise _PermError(f"bad term {text!r}")
            domain_spec = spec[1:]
            _check_domain_spec(domain_spec)
    elif name == "ptr":
        if rest:
            if not rest.startswith(":") or not rest[1:]:
                raise _PermError(f"bad term {text!r}")
            domain_spec = rest[1:]
            _check_domain_spec(domain_spec)
    elif name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise _PermError(f"{name} needs an address: {text!r}")
        network = _parse_network(name, rest[1:], text)
    else:
        raise _PermError(f"unknown mechanism {text!r}")
    return _Term(qualifier, name, domain_spec, cidr4, cidr6, network, text)


def _parse_network(
    name: str, value: str, text: str
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    address, slash, length = value.partition("/")
    limit = 32 if name == "ip4" else 128
    if slash and (_CIDR.fullmatch("/" + length) is None or int(length) > limit):
        raise _PermError(f"bad CIDR length in {text!r}")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise _PermError(f"bad address in {text!r}") from None
    if (ip.version == 4) != (name == "ip4"):
        raise _PermError(f"{name} with a wrong-family address: {text!r}")
    if name == "ip4" and not re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}", address):
        raise _PermError(f"bad address in {text!r}")
    return ipaddress.ip_network(f"{address}/{length if slash else limit}", strict=False)


def _check_macro_string(value: str) -> None:
    for match in _MACRO.finditer(value):
        letter, _, _, _, single = match.groups()
        if letter is None and single not in ("%", "_", "-"):
            raise _PermError(f"bad macro in {value!r}")
        if letter is not None and letter.lower() not in _EXP_LETTERS:
            raise _PermError(f"unknown macro letter in {value!r}")


def _check_domain_spec(spec: str) -> None:
    """domain-spec = macro-string domain-end (RFC 7208 §7.1)."""
    _check_macro_string(spec)
    for match in _MACRO.finditer(spec):
        letter = match.group(1)
        if letter is not None and letter.lower() in "crt":
            raise _PermError(f"%{{{letter}}} is only allowed in explanations: {spec!r}")
    if re.search(r"%\{[^}]*\}\Z|%[%_-]\Z", spec):
        return
    trimmed = spec[:-1] if spec.endswith(".") else spec
    _, dot, top = trimmed.rpartition(".")
    if not dot or not _TOPLABEL.fullmatch(top):
        raise _PermError(f"{spec!r} does not end in a valid top-level label")


def _valid_domain(domain: str) -> bool:
    """RFC 7208 §4.3: a multi-label name, no empty label, labels of at most 63 octets."""
    if not domain or len(domain) > 253 or "." not in domain:
        return False
    return all(0 < len(label) <= 63 for label in domain.split("."))
