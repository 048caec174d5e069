"""TLS-RPT (RFC 8460): session results, daily aggregate reports, and their delivery.

Talks to: the DNS resolver (TXT ``_smtp._tls.<policy domain>``), the report
destinations named in ``rua``: ``mailto:`` addresses through Kakitome's own injection
path (a callable given by the runtime, so the report is DKIM-signed and queued like any
message) and ``https:`` URLs by POST with httpx (resolved by our resolver, no redirects,
``settings.tlsrpt.https_timeout`` seconds, the response body read up to 64 KiB).

Trusts: the TXT record for where to send (RFC 8460 §3: exactly one ``v=TLSRPTv1``
record); HTTPS destinations must present a certificate valid for their host against the
same anchors as MTA-STS (system store plus ``settings.tls.ca_file``).

What is counted (T26): every new TLS session attempt the delivery agent makes — a
success, or a failure with its RFC 8460 §4.3 result type — aggregated per policy domain,
policy (type, strings, MX patterns), MX host, receiving IP and result type per UTC day.
Reports are made only for finished days, once per domain and day, in the shape of RFC
8460 §4.4; mail reports are ``multipart/report; report-type="tlsrpt"`` with a gzip
``application/tlsrpt+gzip`` attachment and ``TLS-Required: No`` (T27, RFC 8460 §5.3 and
RFC 8689 §5), HTTPS reports are POSTed as ``application/tlsrpt+gzip``.

Limits: at most ``MAX_RUA`` destinations per domain; failure details per policy capped
at ``MAX_FAILURE_DETAILS`` (the largest counts are kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import json
import logging
import secrets
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Protocol

from kakitome.config import Settings
from kakitome.errors import DeliveryError
from kakitome.tls.mta_sts import StsError, TXTResolver, https_context, https_request
from kakitome.tls.receipt import PeerVerification

log = logging.getLogger(__name__)

MAX_RUA = 10
MAX_FAILURE_DETAILS = 1000
MEDIA_TYPE = "application/tlsrpt+gzip"

# RFC 8460 §4.3 result types.
STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
CERTIFICATE_EXPIRED = "certificate-expired"
CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
VALIDATION_FAILURE = "validation-failure"
TLSA_INVALID = "tlsa-invalid"
DNSSEC_INVALID = "dnssec-invalid"
DANE_REQUIRED = "dane-required"
STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
STS_POLICY_INVALID = "sts-policy-invalid"
STS_WEBPKI_INVALID = "sts-webpki-invalid"
RESULT_TYPES = (
    STARTTLS_NOT_SUPPORTED,
    CERTIFICATE_HOST_MISMATCH,
    CERTIFICATE_EXPIRED,
    CERTIFICATE_NOT_TRUSTED,
    VALIDATION_FAILURE,
    TLSA_INVALID,
    DNSSEC_INVALID,
    DANE_REQUIRED,
    STS_POLICY_FETCH_ERROR,
    STS_POLICY_INVALID,
    STS_WEBPKI_INVALID,
)
SUCCESS = "success"  # our receipt's word for a session without failure

POLICY_STS = "sts"
POLICY_TLSA = "tlsa"
POLICY_NONE = "no-policy-found"


@dataclass(frozen=True, slots=True)
class ReportPolicy:
    """The policy a session was made under, as TLS-RPT names it."""

    domain: str
    type: str = POLICY_NONE
    strings: tuple[str, ...] = ()
    mx_patterns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One session attempt (or, from the store, ``count`` of them)."""

    day: str  # UTC, YYYY-MM-DD
    policy: ReportPolicy
    mx_host: str
    receiving_ip: str
    result_type: str | None  # None: success
    sending_ip: str = ""
    count: int = 1
    reason_code: str = ""


def utc_day(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")


def classify_certificate(verification: PeerVerification, verify_error: str | None) -> str:
    """The result type for a certificate that did not verify."""
    if verification is PeerVerification.TRUSTED:
        return CERTIFICATE_HOST_MISMATCH
    text = (verify_error or "").lower()
    if "expired" in text or "not yet valid" in text:
        return CERTIFICATE_EXPIRED
    if "mismatch" in text or "hostname" in text:
        return CERTIFICATE_HOST_MISMATCH
    return CERTIFICATE_NOT_TRUSTED


# -- the rua record -------------------------------------------------------------------------


def parse_tlsrpt_record(texts: Sequence[str]) -> list[str]:
    """The ``rua`` URIs of the single ``v=TLSRPTv1`` record, or [] (RFC 8460 §3)."""
    records = [t for t in texts if t.startswith("v=TLSRPTv1")]
    if len(records) != 1:
        return []
    fields = [f.strip() for f in records[0].split(";") if f.strip()]
    if fields[0] != "v=TLSRPTv1":
        return []
    for item in fields[1:]:
        key, _, value = item.partition("=")
        if key.strip() == "rua":
            uris = [u.strip() for u in value.split(",") if u.strip()]
            return [u for u in uris if u.lower().startswith(("mailto:", "https:"))][:MAX_RUA]
    return []


# -- the report -----------------------------------------------------------------------------


def build_report(
    domain: str,
    day: str,
    sessions: Sequence[SessionRecord],
    *,
    organization: str,
    contact: str,
    report_id: str,
) -> dict[str, Any]:
    """The RFC 8460 §4.4 JSON document for one policy domain and one UTC day."""
    start = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1) - dt.timedelta(seconds=1)
    groups: dict[ReportPolicy, list[SessionRecord]] = {}
    for session in sessions:
        if session.policy.domain == domain and session.day == day:
            groups.setdefault(session.policy, []).append(session)
    policies: list[dict[str, Any]] = []
    for policy, records in sorted(groups.items(), key=lambda item: (item[0].type, item[0].strings)):
        ok = sum(r.count for r in records if r.result_type is None)
        failed = [r for r in records if r.result_type is not None]
        details: dict[tuple[str, str, str, str, str], int] = {}
        for r in failed:
            key = (r.result_type or "", r.sending_ip, r.mx_host, r.receiving_ip, r.reason_code)
            details[key] = details.get(key, 0) + r.count
        entry: dict[str, Any] = {
            "policy": {
                "policy-type": policy.type,
                "policy-domain": domain,
            },
            "summary": {
                "total-successful-session-count": ok,
                "total-failure-session-count": sum(details.values()),
            },
        }
        if policy.strings:
            entry["policy"]["policy-string"] = list(policy.strings)
        if policy.mx_patterns:
            entry["policy"]["mx-host"] = list(policy.mx_patterns)
        if details:
            ordered = sorted(details.items(), key=lambda item: -item[1])[:MAX_FAILURE_DETAILS]
            entry["failure-details"] = []
            for (result, sending, mx_host, receiving, reason), count in ordered:
                detail: dict[str, Any] = {"result-type": result}
                if sending:
                    detail["sending-mta-ip"] = sending
                if mx_host:
                    detail["receiving-mx-hostname"] = mx_host
                if receiving:
                    detail["receiving-ip"] = receiving
                detail["failed-session-count"] = count
                if reason:
                    detail["failure-reason-code"] = reason
                entry["failure-details"].append(detail)
        policies.append(entry)
    return {
        "organization-name": organization,
        "date-range": {
            "start-datetime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end-datetime": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "contact-info": contact,
        "report-id": report_id,
        "policies": policies,
    }


def report_filename(submitter: str, domain: str, day: str, unique: str) -> str:
    """RFC 8460 §5.3: ``submitter!policy-domain!begin!end!unique.json.gz``."""
    start = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    begin = int(start.timestamp())
    end = begin + 86_400 - 1
    return f"{submitter}!{domain}!{begin}!{end}!{unique}.json.gz"


def gzip_report(report: dict[str, Any]) -> bytes:
    return gzip.compress(json.dumps(report, separators=(",", ":")).encode("utf-8"), mtime=0)


def report_mail(
    report: dict[str, Any],
    *,
    domain: str,
    day: str,
    submitter: str,
    sender: str,
    recipient: str,
    now: float,
) -> bytes:
    """The report as a mail (RFC 8460 §5.3), CRLF bytes ready for injection."""
    unique = secrets.token_hex(6)
    report_id = str(report["report-id"])
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = format_datetime(dt.datetime.fromtimestamp(now, dt.UTC))
    message["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>"
    message["Message-ID"] = f"<{int(now)}.tlsrpt.{unique}@{submitter}>"
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = submitter
    # RFC 8689 §5 / RFC 8460 §5.3: a report about TLS trouble must not need TLS to arrive.
    message["TLS-Required"] = "No"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"This is an aggregate TLS report from {submitter} for {domain}, {day} (UTC).\n"
    )
    message.add_attachment(
        gzip_report(report),
        maintype="application",
        subtype="tlsrpt+gzip",
        filename=report_filename(submitter, domain, day, unique),
    )
    message.replace_header("Content-Type", 'multipart/report; report-type="tlsrpt"')
    # replace_header drops the boundary parameter; put it back.
    boundary = message.get_boundary() or f"tlsrpt-{unique}"
    message.set_boundary(boundary)
    return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# -- the reporter ---------------------------------------------------------------------------


class SessionStore(Protocol):
    async def tlsrpt_pending(self, before_day: str) -> list[tuple[str, str]]: ...

    async def tlsrpt_sessions(self, domain: str, day: str) -> list[SessionRecord]: ...

    async def tlsrpt_mark_reported(
        self, domain: str, day: str, report_id: str, destinations: Sequence[str], now: float
    ) -> None: ...


SubmitMail = Callable[[bytes, str, list[str]], Awaitable[str]]


@dataclass
class DeliveredReport:
    domain: str
    day: str
    report: dict[str, Any]
    destinations: list[str]
    failures: list[str]


class TLSRPTReporter:
    """Sends each finished day's reports once; ``run`` loops, ``report_due`` does one round."""

    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        resolver: TXTResolver,
        submit_mail: SubmitMail | None,
        *,
        clock: Callable[[], float],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.resolver = resolver
        self.submit_mail = submit_mail
        self.clock = clock
        self._ssl = ssl_context

    @property
    def submitter(self) -> str:
        return self.settings.delivery.helo_hostname

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = https_context(self.settings.tls)
        return self._ssl

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.report_due()
            except Exception:  # a reporting problem must never stop the service
                log.exception("TLS-RPT reporting round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.tlsrpt.interval)

    async def report_due(self) -> list[DeliveredReport]:
        """Report every (domain, day) before today (UTC) not yet reported."""
        today = utc_day(self.clock())
        done: list[DeliveredReport] = []
        for domain, day in await self.store.tlsrpt_pending(today):
            done.append(await self.report_one(domain, day))
        return done

    async def report_one(self, domain: str, day: str) -> DeliveredReport:
        now = self.clock()
        try:
            rua = parse_tlsrpt_record(await self.resolver.resolve_txt(f"_smtp._tls.{domain}"))
        except DeliveryError as exc:
            log.info("no TLS-RPT record for %s: %s", domain, exc)
            rua = []
        report_id = f"{day}.{secrets.token_hex(8)}@{self.submitter}"
        report = build_report(
            domain,
            day,
            await self.store.tlsrpt_sessions(domain, day),
            organization=self.settings.tlsrpt.organization_name,
            contact=self.settings.tlsrpt.contact_info,
            report_id=report_id,
        )
        failures: list[str] = []
        sent: list[str] = []
        for uri in rua:
            try:
                await self._send(uri, report, domain, day, now)
                sent.append(uri)
            except (StsError, DeliveryError, OSError, ValueError) as exc:
                failures.append(f"{uri}: {exc}")
                log.warning("TLS-RPT report for %s to %s failed: %s", domain, uri, exc)
        await self.store.tlsrpt_mark_reported(domain, day, report_id, sent, now)
        return DeliveredReport(domain, day, report, sent, failures)

    async def _send(
        self, uri: str, report: dict[str, Any], domain: str, day: str, now: float
    ) -> None:
        if uri.lower().startswith("mailto:"):
            if self.submit_mail is None:
                raise ValueError("no mail injection path configured")
            address = urllib.parse.unquote(uri[len("mailto:") :].split("?")[0])
            sender = self.settings.tlsrpt.sender or f"postmaster@{self.submitter}"
            content = report_mail(
                report,
                domain=domain,
                day=day,
                submitter=self.submitter,
                sender=sender,
                recipient=address,
                now=now,
            )
            await self.submit_mail(content, sender, [address])
            return
        url = urllib.parse.urlsplit(uri)
        if url.scheme.lower() != "https" or not url.hostname:
            raise ValueError(f"unsupported report URI {uri}")
        async with asyncio.timeout(self.settings.tlsrpt.https_timeout):
            status, _, _ = await https_request(
                "POST",
                url.hostname,
                (url.path or "/") + (f"?{url.query}" if url.query else ""),
                port=url.port or 443,
                resolver=self.resolver,
                ssl_context=self.ssl_context,
                max_bytes=65_536,
                headers={"Content-Type": MEDIA_TYPE},
                content=gzip_report(report),
            )
        if not 200 <= status < 300:
            raise ValueError(f"HTTP {status}")


__all__ = [
    "MEDIA_TYPE",
    "RESULT_TYPES",
    "ReportPolicy",
    "SessionRecord",
    "TLSRPTReporter",
    "build_report",
    "classify_certificate",
    "gzip_report",
    "parse_tlsrpt_record",
    "report_filename",
    "report_mail",
    "utc_day",
]
