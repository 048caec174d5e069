"""Complaints (ARF, RFC 5965) and TLS reports (TLS-RPT, RFC 8460) sent to us by mail.

Input is mail from anybody, so nothing is trusted: a complaint only names an address and a
message; the caller decides whether that message is ours (its return path) before anything
is suppressed. TLS-RPT JSON is checked for the fields RFC 8460 §4.4 requires and kept as
sent; the gzip is decompressed with a ceiling (``max_bytes``), so a small bomb cannot
become gigabytes.
"""

from __future__ import annotations

import email
import email.message
import email.utils
import gzip
import json
import re
import zlib
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from typing import Any

from kakitome.inbound.bounces import typed_value

__all__ = ["Complaint", "ReportError", "TLSReport", "parse_arf", "parse_tlsrpt", "tlsrpt_json"]

TLSRPT_TYPES = ("application/tlsrpt+gzip", "application/tlsrpt+json")


class ReportError(ValueError):
    """A report that claims to be one and is not well formed."""


@dataclass(frozen=True, slots=True)
class Complaint:
    feedback_type: str  # abuse | fraud | virus | other | not-spam | auth-failure
    original_mail_from: str | None
    original_rcpt_to: tuple[str, ...]
    reported_domain: str | None
    source_ip: str | None
    user_agent: str | None
    # From the returned message, when included (message/rfc822 or text/rfc822-headers).
    original_message_id: str | None = None
    original_return_path: str | None = None
    original_to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TLSReport:
    organization: str
    report_id: str
    start: float | None
    end: float | None
    contact: str
    successful: int
    failed: int
    report: dict[str, Any]


def _message(raw: bytes) -> email.message.Message:
    return email.message_from_bytes(raw, policy=email_policy.compat32)


def _report_type(msg: email.message.Message) -> str:
    if msg.get_content_type() != "multipart/report":
        return ""
    return str(msg.get_param("report-type", "")).strip('"').lower()


# MIME types and parameters are never encoded or folded inside a token: a message whose
# bytes lack these words cannot be an ARF or TLS-RPT report, and is not parsed at all.
_ARF_HINT = re.compile(rb"feedback-report", re.IGNORECASE)
_TLSRPT_HINT = re.compile(rb"tlsrpt", re.IGNORECASE)


def parse_arf(raw: bytes) -> Complaint | None:
    """The complaint in an ARF report, or None when the message is not one."""
    if _ARF_HINT.search(raw) is None:
        return None
    msg = _message(raw)
    if _report_type(msg) != "feedback-report":
        return None
    fields: dict[str, list[str]] = {}
    original: email.message.Message | None = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/feedback-report":
            for block in _blocks(part):
                for name, value in block:
                    fields.setdefault(name.lower(), []).append(str(value).strip())
        elif ctype in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
                original = inner[0]
        elif ctype in ("text/rfc822-headers", "text/global-headers") and original is None:
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                original = email.message_from_bytes(data, policy=email_policy.compat32)
    if not fields.get("feedback-type"):
        return None

    def first(name: str) -> str | None:
        values = fields.get(name)
        return typed_value(values[0]) or None if values else None

    to: tuple[str, ...] = ()
    message_id = return_path = None
    if original is not None:
        message_id = str(original.get("Message-ID", "")).strip() or None
        return_path = typed_value(str(original.get("Return-Path", ""))) or None
        to = tuple(addr for _, addr in email.utils.getaddresses(original.get_all("To", [])) if addr)
    return Complaint(
        feedback_type=fields["feedback-type"][0].lower(),
        original_mail_from=first("original-mail-from"),
        original_rcpt_to=tuple(typed_value(v) for v in fields.get("original-rcpt-to", [])),
        reported_domain=first("reported-domain"),
        source_ip=first("source-ip"),
        user_agent=first("user-agent"),
        original_message_id=message_id,
        original_return_path=return_path,
        original_to=to,
    )


def _blocks(part: email.message.Message) -> list[list[tuple[str, str]]]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [list(m.items()) for m in payload if isinstance(m, email.message.Message)]
    data = part.get_payload(decode=True)
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(payload)
    inner = email.message_from_string(text.lstrip(), policy=email_policy.compat32)
    return [list(inner.items())]


def tlsrpt_json(raw: bytes, *, max_bytes: int) -> bytes | None:
    """The JSON of a TLS-RPT mail (decompressed), or None when it carries no report."""
    if _TLSRPT_HINT.search(raw) is None:
        return None
    msg = _message(raw)
    candidates = [msg] if msg.get_content_type() in TLSRPT_TYPES else []
    if _report_type(msg) == "tlsrpt" or not candidates:
        candidates += [p for p in msg.walk() if p.get_content_type() in TLSRPT_TYPES]
    for part in candidates:
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        if part.get_content_type() == "application/tlsrpt+gzip" or data[:2] == b"\x1f\x8b":
            return _gunzip(data, max_bytes)
        if len(data) > max_bytes:
            raise ReportError(f"TLS report larger than {max_bytes} bytes")
        return data
    return None


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise ReportError(f"TLS report is not valid gzip: {exc}") from exc
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise ReportError(f"TLS report decompresses to more than {max_bytes} bytes")
    return out


def parse_tlsrpt(document: bytes) -> TLSReport:
    """Check and summarise a TLS-RPT JSON document (RFC 8460 §4.4)."""
    try:
        report = json.loads(document)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportError(f"TLS report is not JSON: {exc}") from exc
    if not isinstance(report, dict):
        raise ReportError("TLS report is not a JSON object")
    organization = report.get("organization-name")
    report_id = report.get("report-id")
    dates = report.get("date-range")
    policies = report.get("policies")
    if not isinstance(organization, str) or not isinstance(report_id, str):
        raise ReportError("TLS report lacks organization-name or report-id")
    if not isinstance(dates, dict) or not isinstance(policies, list):
        raise ReportError("TLS report lacks date-range or policies")
    successful = failed = 0
    for policy in policies:
        summary = policy.get("summary") if isinstance(policy, dict) else None
        if not isinstance(summary, dict):
            raise ReportError("TLS report policy without summary")
        ok = summary.get("total-successful-session-count", 0)
        bad = summary.get("total-failure-session-count", 0)
        if not isinstance(ok, int) or not isinstance(bad, int) or ok < 0 or bad < 0:
            raise ReportError("TLS report session counts must be non-negative integers")
        successful += ok
        failed += bad
    contact = report.get("contact-info", "")
    return TLSReport(
        organization=organization,
        report_id=report_id,
        start=_timestamp(dates.get("start-datetime")),
        end=_timestamp(dates.get("end-datetime")),
        contact=contact if isinstance(contact, str) else "",
        successful=successful,
        failed=failed,
        report=report,
    )


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def gzip_report(document: dict[str, Any]) -> bytes:
    """A report as senders send it (for tests and tools)."""
    return gzip.compress(json.dumps(document).encode())
