"""MTA-STS (RFC 8461): discovery, the HTTPS policy fetch, strict parsing, and the cache.

Talks to: the DNS resolver (TXT ``_mta-sts.<domain>``, A/AAAA ``mta-sts.<domain>``) and
the policy host ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` on
``settings.mta_sts.https_port`` (443 on the internet), with httpx. The host name is
resolved by our own resolver (so the same DNS as delivery is used) and the connection is
made to that address with the policy host name as SNI and ``Host``.

Trusts: the policy only when it came over HTTPS with a certificate that chains to the
system store plus ``settings.tls.ca_file`` (only ``ca_file`` when ``ca_file_only``) and
is valid for ``mta-sts.<domain>`` (T20); the TXT record only as a hint that the policy
changed (it is not authenticated, RFC 8461 §3.1). A cached policy is the downgrade
defence: it is used until its ``max_age`` runs out, even when the TXT record disappears
or the fetch fails (T22, RFC 8461 §5.1).

Limits (T20): no redirects (RFC 8461 §3.3), status 200 only, ``text/plain`` only,
``settings.mta_sts.fetch_timeout`` seconds for the whole fetch, at most
``settings.mta_sts.max_policy_bytes`` bytes (64 KiB by default) read; exactly one
``v=STSv1`` TXT record with an ``id`` of 1-32 letters and digits (T19); policies are
parsed strictly (T21): ``version: STSv1`` first, ``mode`` one of enforce/testing/none,
``max_age`` digits only and at most 31,557,600, at least one ``mx`` unless the mode is
``none``, duplicated fields refused; unknown fields are ignored as the RFC requires.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import httpx

from kakitome.config import MTASTSSettings, TLSSettings
from kakitome.errors import DeliveryError

WELL_KNOWN_PATH = "/.well-known/mta-sts.txt"
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: about one year
_STS_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_FIELD_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class StsMode(StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


class StsError(Exception):
    """Why there is no usable policy: ``result_type`` is the RFC 8460 result type."""

    def __init__(self, result_type: str, reason: str) -> None:
        super().__init__(reason)
        self.result_type = result_type
        self.reason = reason


# RFC 8460 §4.3.2.2 result types of MTA-STS.
STS_FETCH_ERROR = "sts-policy-fetch-error"
STS_INVALID = "sts-policy-invalid"
STS_WEBPKI_INVALID = "sts-webpki-invalid"


@dataclass(frozen=True, slots=True)
class StsRecord:
    """The one ``v=STSv1`` TXT record of a domain."""

    policy_id: str
    text: str


@dataclass(frozen=True, slots=True)
class MtaStsPolicy:
    """A parsed policy; ``policy_id`` comes from the TXT record it was fetched for."""

    mode: StsMode
    max_age: int
    mx: tuple[str, ...]
    text: str
    policy_id: str = ""

    def matches(self, mx_host: str) -> bool:
        return any(mx_pattern_matches(p, mx_host) for p in self.mx)

    @property
    def lines(self) -> tuple[str, ...]:
        """The policy as TLS-RPT's ``policy-string`` (one entry per line)."""
        return tuple(line.strip() for line in self.text.splitlines() if line.strip())


@dataclass(frozen=True, slots=True)
class CachedStsPolicy:
    """A policy in the cache (persisted by the TLS state store)."""

    domain: str
    policy: MtaStsPolicy
    fetched_at: float

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.policy.max_age

    def valid(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True, slots=True)
class StsOutcome:
    """What discovery found for a domain: the policy to apply (or None) and how."""

    domain: str
    policy: MtaStsPolicy | None
    # "fetched", "cache", "none" (no record, no cache), "failed" (no cache, fetch failed)
    how: str
    note: str = ""
    # RFC 8460 result type of a failed discovery (fetch error, invalid policy), if any.
    failure: str | None = None
    fetched_at: float | None = None
    expires_at: float | None = None


# -- parsing --------------------------------------------------------------------------------


def parse_sts_records(texts: Sequence[str]) -> StsRecord:
    """The single ``v=STSv1`` record among a name's TXT strings (T19).

    Records that do not start with ``v=STSv1`` are not MTA-STS records and are left out
    (RFC 8461 §3.1); none, two or more, or an invalid one raise StsError (no policy).
    """
    candidates = [t for t in texts if t.startswith("v=STSv1")]
    if not candidates:
        raise StsError(STS_INVALID, "no v=STSv1 TXT record")
    if len(candidates) > 1:
        raise StsError(STS_INVALID, f"{len(candidates)} v=STSv1 TXT records; exactly one allowed")
    text = candidates[0]
    fields = [f.strip(" \t") for f in text.split(";")]
    if fields and fields[-1] == "":
        fields.pop()  # a trailing separator is allowed
    if not fields or fields[0] != "v=STSv1":
        raise StsError(STS_INVALID, f"TXT record does not start with v=STSv1: {text!r}")
    ids: list[str] = []
    for item in fields[1:]:
        key, sep, value = item.partition("=")
        if not sep or not _FIELD_KEY.fullmatch(key):
            raise StsError(STS_INVALID, f"malformed field {item!r} in the TXT record")
        if key == "id":
            ids.append(value)
    if len(ids) != 1:
        raise StsError(STS_INVALID, "the TXT record must have exactly one id")
    if not _STS_ID.fullmatch(ids[0]):
        raise StsError(STS_INVALID, f"id {ids[0]!r} is not 1-32 letters and digits")
    return StsRecord(ids[0], text)


def _valid_mx_pattern(pattern: str) -> bool:
    name = pattern[2:] if pattern.startswith("*.") else pattern
    labels = name.split(".")
    return len(labels) >= 2 and all(_LABEL.fullmatch(label) for label in labels)


def parse_policy(text: str, policy_id: str = "") -> MtaStsPolicy:
    """Parse a policy body strictly (T21); raises StsError(sts-policy-invalid)."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise StsError(STS_INVALID, "empty policy")
    seen: dict[str, str] = {}
    mx: list[str] = []
    for number, line in enumerate(lines, start=1):
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip(" \t")
        if not sep or not _FIELD_KEY.fullmatch(key):
            raise StsError(STS_INVALID, f"line {number} is not 'key: value': {line[:80]!r}")
        if number == 1 and key != "version":
            raise StsError(STS_INVALID, "the first field must be version")
        if key == "mx":
            pattern = value.lower().rstrip(".")
            if not _valid_mx_pattern(pattern):
                raise StsError(STS_INVALID, f"invalid mx pattern {value!r}")
            mx.append(pattern)
        elif key in ("version", "mode", "max_age"):
            if key in seen:
                raise StsError(STS_INVALID, f"field {key} appears twice")
            seen[key] = value
        # any other key is an extension: ignored (RFC 8461 §3.2)
    if seen.get("version") != "STSv1":
        raise StsError(STS_INVALID, f"version must be STSv1, not {seen.get('version')!r}")
    try:
        mode = StsMode(seen.get("mode", ""))
    except ValueError:
        raise StsError(STS_INVALID, f"unknown mode {seen.get('mode')!r}") from None
    max_age_text = seen.get("max_age", "")
    if not (max_age_text.isascii() and max_age_text.isdigit()) or len(max_age_text) > 10:
        raise StsError(STS_INVALID, f"max_age must be 1-10 digits, not {max_age_text!r}")
    max_age = int(max_age_text)
    if max_age > MAX_AGE_LIMIT:
        raise StsError(STS_INVALID, f"max_age {max_age} exceeds {MAX_AGE_LIMIT}")
    if not mx and mode is not StsMode.NONE:
        raise StsError(STS_INVALID, "a policy in enforce or testing mode needs an mx field")
    return MtaStsPolicy(mode, max_age, tuple(mx), text, policy_id)


def mx_pattern_matches(pattern: str, mx_host: str) -> bool:
    """RFC 8461 §4.1: exact match, or ``*.`` standing for exactly one left-most label."""
    pattern, host = pattern.lower().rstrip("."), mx_host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


# -- fetching -------------------------------------------------------------------------------


class AddressResolver(Protocol):
    async def resolve_addresses(self, host: str) -> tuple[str, ...]: ...


def https_context(settings: TLSSettings) -> ssl.SSLContext:
    """A verifying client context (chain and host name) for policy and report hosts."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None)
    if settings.ca_file_only:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = True
    if settings.ca_file:
        ctx.load_verify_locations(cafile=settings.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(seen) or "certificate verify failed" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def https_request(
    method: str,
    host: str,
    path: str,
    *,
    port: int,
    resolver: AddressResolver,
    ssl_context: ssl.SSLContext,
    max_bytes: int,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> tuple[int, str, bytes]:
    """One HTTPS request to ``host`` (resolved by our resolver), no redirects followed.

    Returns (status, media type, body up to ``max_bytes``); raises StsError with
    ``sts-webpki-invalid`` for certificate failures and ``sts-policy-fetch-error`` for
    everything else. The caller bounds the time (``asyncio.timeout``).
    """
    try:
        addresses = await resolver.resolve_addresses(host)
    except DeliveryError as exc:
        raise StsError(STS_FETCH_ERROR, f"address lookup for {host} failed: {exc}") from exc
    if not addresses:
        raise StsError(STS_FETCH_ERROR, f"{host} has no address")
    host_header = host if port == 443 else f"{host}:{port}"
    last: StsError | None = None
    for ip in addresses:
        url = f"https://{_url_host(ip)}:{port}{path}"
        try:
            async with httpx.AsyncClient(
                verify=ssl_context, follow_redirects=False, trust_env=False
            ) as client:
                request = client.build_request(
                    method,
                    url,
                    headers={"Host": host_header, **(headers or {})},
                    content=content,
                    extensions={"sni_hostname": host},
                )
                response = await client.send(request, stream=True)
                try:
                    body = bytearray()
                    async for chunk in response.aiter_raw():
                        body += chunk
                        if len(body) > max_bytes:
                            raise StsError(
                                STS_FETCH_ERROR, f"response from {host} exceeds {max_bytes} bytes"
                            )
                finally:
                    await response.aclose()
                media = response.headers.get("content-type", "").split(";")[0].strip().lower()
                return response.status_code, media, bytes(body)
        except StsError:
            raise
        except httpx.HTTPError as exc:
            if _is_certificate_error(exc):
                last = StsError(STS_WEBPKI_INVALID, f"certificate of {host} is not valid: {exc}")
            else:
                last = StsError(STS_FETCH_ERROR, f"HTTPS to {host} [{ip}] failed: {exc!r}")
        except (OSError, ssl.SSLError) as exc:
            last = StsError(STS_FETCH_ERROR, f"HTTPS to {host} [{ip}] failed: {exc!r}")
    assert last is not None
    raise last


async def fetch_policy(
    domain: str,
    policy_id: str,
    *,
    resolver: AddressResolver,
    settings: MTASTSSettings,
    ssl_context: ssl.SSLContext,
) -> MtaStsPolicy:
    """Fetch and parse ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (T20, T21)."""
    host = f"mta-sts.{domain}"
    try:
        async with asyncio.timeout(settings.fetch_timeout):
            status, media, body = await https_request(
                "GET",
                host,
                WELL_KNOWN_PATH,
                port=settings.https_port,
                resolver=resolver,
                ssl_context=ssl_context,
                max_bytes=settings.max_policy_bytes,
            )
    except TimeoutError as exc:
        raise StsError(
            STS_FETCH_ERROR, f"policy fetch from {host} took over {settings.fetch_timeout:g} s"
        ) from exc
    if status != 200:
        raise StsError(STS_FETCH_ERROR, f"policy host {host} answered HTTP {status}")
    if media != "text/plain":
        raise StsError(STS_INVALID, f"policy has media type {media or 'none'!r}, not text/plain")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StsError(STS_INVALID, "policy is not UTF-8") from exc
    return parse_policy(text, policy_id)


# -- discovery with the cache ---------------------------------------------------------------


class StsCache(Protocol):
    async def get_sts_policy(self, domain: str) -> CachedStsPolicy | None: ...

    async def put_sts_policy(self, cached: CachedStsPolicy) -> None: ...


class TXTResolver(AddressResolver, Protocol):
    async def resolve_txt(self, name: str) -> list[str]: ...


@dataclass
class MtaStsDiscovery:
    """Finds the policy for a domain: TXT record, cache, fetch (RFC 8461 §5.1).

    A short in-process memo (``settings.recheck_interval`` seconds) spares the TXT lookup
    and the cache read for every batch to the same domain.
    """

    settings: MTASTSSettings
    tls_settings: TLSSettings
    resolver: TXTResolver
    cache: StsCache
    clock: Callable[[], float]
    _memo: dict[str, tuple[float, StsOutcome]] = field(default_factory=dict)
    _context: ssl.SSLContext | None = None

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = https_context(self.tls_settings)
        return self._context

    async def discover(self, domain: str) -> StsOutcome:
        domain = domain.lower().rstrip(".")
        now = self.clock()
        memo = self._memo.get(domain)
        if memo is not None and now - memo[0] < self.settings.recheck_interval:
            return memo[1]
        outcome = await self._discover(domain, now)
        if len(self._memo) > 10_000:
            self._memo.clear()
        self._memo[domain] = (now, outcome)
        return outcome

    async def _discover(self, domain: str, now: float) -> StsOutcome:
        cached = await self.cache.get_sts_policy(domain)
        if cached is not None and not cached.valid(now):
            cached = None
        try:
            record: StsRecord | None = parse_sts_records(
                await self.resolver.resolve_txt(f"_mta-sts.{domain}")
            )
            record_note = ""
        except StsError as exc:
            record, record_note = None, exc.reason
        except DeliveryError as exc:
            record, record_note = None, f"TXT lookup failed: {exc}"
        if record is None:
            if cached is not None:
                return self._from_cache(cached, f"{record_note}; cached policy kept until max_age")
            return StsOutcome(domain, None, "none", record_note)
        if (
            cached is not None
            and cached.policy.policy_id == record.policy_id
            and cached.expires_at - now > self.settings.refresh_before
        ):
            return self._from_cache(cached, "policy id unchanged")
        try:
            policy = await fetch_policy(
                domain,
                record.policy_id,
                resolver=self.resolver,
                settings=self.settings,
                ssl_context=self.ssl_context,
            )
        except StsError as exc:
            if cached is not None:
                outcome = self._from_cache(
                    cached, f"fetch failed ({exc.reason}); cached policy kept until max_age"
                )
                return StsOutcome(
                    domain,
                    outcome.policy,
                    outcome.how,
                    outcome.note,
                    exc.result_type,
                    outcome.fetched_at,
                    outcome.expires_at,
                )
            return StsOutcome(domain, None, "failed", exc.reason, exc.result_type)
        fresh = CachedStsPolicy(domain, policy, now)
        await self.cache.put_sts_policy(fresh)
        return StsOutcome(
            domain, policy, "fetched", f"id {record.policy_id}", None, now, fresh.expires_at
        )

    @staticmethod
    def _from_cache(cached: CachedStsPolicy, note: str) -> StsOutcome:
        return StsOutcome(
            cached.domain,
            cached.policy,
            "cache",
            note.strip("; "),
            None,
            cached.fetched_at,
            cached.expires_at,
        )


__all__ = [
    "CachedStsPolicy",
    "MtaStsDiscovery",
    "MtaStsPolicy",
    "StsError",
    "StsMode",
    "StsOutcome",
    "StsRecord",
    "fetch_policy",
    "https_context",
    "https_request",
    "mx_pattern_matches",
    "parse_policy",
    "parse_sts_records",
]
