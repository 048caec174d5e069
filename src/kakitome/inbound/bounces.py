"""Bounce parsing: what a delivery status notification says about each recipient.

Input is a whole message as received from anybody on the internet, so nothing in it is
trusted: this module only reads. It understands

- RFC 3464 reports (``multipart/report; report-type=delivery-status`` with a
  ``message/delivery-status`` part, also ``message/global-delivery-status`` of RFC 6533, and
  the part sent as text or base64 by careless software) — what Postfix, Sendmail, Gmail,
  Microsoft 365/Exchange, Yahoo and Kakitome itself send;
- the common non-standard formats: Exim's default bounce (``X-Failed-Recipients`` and an
  indented SMTP transcript), qmail's (``Hi. This is the qmail-send program``, ``(#5.1.1)``),
  Gmail's older plain-text notices (``Delivery to the following recipient failed
  permanently``), and Exim's delay warnings;
- as a last resort, any text with an SMTP reply (``550 5.1.1 ...``): one status, recipient
  unknown (the caller matches it to the single delivery of the message it belongs to).

Limits: at most ``MAX_RECIPIENTS`` recipients per report and ``MAX_TEXT`` characters of
text are looked at; diagnostics are cut to one line of printable characters.
"""

from __future__ import annotations

import email
import email.message
import re
from dataclasses import dataclass
from email import policy as email_policy

from kakitome.suppression import is_permanent_status

__all__ = ["BounceReport", "RecipientStatus", "looks_like_bounce", "parse_bounce"]

MAX_RECIPIENTS = 200
MAX_TEXT = 200_000

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY = re.compile(r"(?<![\d.])([245]\d\d)[ -]+(?:([245]\.\d{1,3}\.\d{1,3})\b)?")
_QMAIL_STATUS = re.compile(r"\(#([245]\.\d{1,3}\.\d{1,3})\)")
_ADDRESS = re.compile(r"<?([^\s<>\"@]+@[A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9])>?")
_ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """One recipient's fate as the report tells it. ``recipient`` is "" when unknown."""

    recipient: str
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str | None  # enhanced status code (RFC 3463), e.g. 5.1.1
    code: int | None  # SMTP reply code from the diagnostic, e.g. 550
    diagnostic: str
    remote_mta: str | None = None
    original_recipient: str | None = None

    @property
    def permanent(self) -> bool:
        """A failure that suppresses at once (see ``suppression.is_permanent_status``)."""
        return self.action == "failed" and is_permanent_status(self.status, self.code)

    @property
    def reply_code(self) -> int:
        """The SMTP code to record: the diagnostic's, else one that fits the status."""
        if self.code is not None:
            return self.code
        if self.status and self.status[0] == "4":
            return 450
        return 550 if self.action == "failed" else 250


@dataclass(frozen=True, slots=True)
class BounceReport:
    format: str  # rfc3464 | exim | qmail | gmail-text | heuristic
    recipients: tuple[RecipientStatus, ...]
    reporting_mta: str | None = None
    original_envelope_id: str | None = None
    # From the returned message (or its headers), when the report carries one.
    original_message_id: str | None = None
    original_return_path: str | None = None


def _message(raw: bytes) -> email.message.Message:
    return email.message_from_bytes(raw[: MAX_TEXT * 5], policy=email_policy.compat32)


def looks_like_bounce(raw: bytes, mail_from: str) -> bool:
    """True for a null-sender message, a delivery-status report, or a well-known bounce."""
    if not mail_from:
        return True
    msg = _message(raw)
    if msg.get_content_type() == "multipart/report":
        return str(msg.get_param("report-type", "")).lower() == "delivery-status"
    return bool(msg.get("X-Failed-Recipients"))


def parse_bounce(raw: bytes) -> BounceReport | None:
    """What the bounce says, or None when it says nothing we can use."""
    msg = _message(raw)
    standard = _rfc3464(msg)
    if standard is not None and standard.recipients:
        return standard
    text = _plain_text(msg)
    for parser in (_exim, _qmail, _gmail_text):
        report = parser(msg, text)
        if report is not None and report.recipients:
            return _with_original(report, msg)
    return _with_original(_heuristic(msg, text), msg) if text else None


# -- RFC 3464 -----------------------------------------------------------------------------


def _rfc3464(msg: email.message.Message) -> BounceReport | None:
    blocks: list[dict[str, str]] | None = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status") or (
            ctype == "text/delivery-status"
        ):
            blocks = _status_blocks(part)
            break
    if blocks is None or len(blocks) < 1:
        return None
    per_message = blocks[0] if "final-recipient" not in blocks[0] else {}
    recipients = []
    for block in blocks[(0 if not per_message else 1) :][:MAX_RECIPIENTS]:
        final = typed_value(block.get("final-recipient", ""))
        original = typed_value(block.get("original-recipient", "")) or None
        if not final and not original:
            continue
        action = block.get("action", "failed").strip().lower().split()[0:1]
        status = _STATUS.search(block.get("status", ""))
        diagnostic = _one_line(typed_value(block.get("diagnostic-code", "")))
        code_match = _REPLY.search(diagnostic)
        status_text = status.group(0) if status else None
        if status_text is None and code_match and code_match.group(2):
            status_text = code_match.group(2)
        recipients.append(
            RecipientStatus(
                recipient=final or original or "",
                action=action[0] if action and action[0] in _ACTIONS else "failed",
                status=status_text,
                code=int(code_match.group(1)) if code_match else None,
                diagnostic=diagnostic or (status_text or ""),
                remote_mta=typed_value(block.get("remote-mta", "")) or None,
                original_recipient=original,
            )
        )
    report = BounceReport(
        "rfc3464",
        tuple(recipients),
        reporting_mta=typed_value(per_message.get("reporting-mta", "")) or None,
        original_envelope_id=per_message.get("original-envelope-id", "").strip() or None,
    )
    return _with_original(report, msg)


def _status_blocks(part: email.message.Message) -> list[dict[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [
            {k.lower(): _one_line(str(v)) for k, v in block.items()}
            for block in payload
            if isinstance(block, email.message.Message)
        ]
    data = part.get_payload(decode=True)
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(payload)
    return _parse_fields(text)


def _parse_fields(text: str) -> list[dict[str, str]]:
    """Blocks of ``Name: value`` lines separated by blank lines (continuations folded)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text[:MAX_TEXT].replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
        elif line[0] in " \t" and last is not None:
            current[last] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            last = name.strip().lower()
            current[last] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def typed_value(value: str) -> str:
    """``rfc822; user@example.com`` → ``user@example.com`` (also for dns; and smtp;)."""
    value = value.strip()
    if ";" in value:
        value = value.split(";", 1)[1]
    return value.strip().strip("<>").strip()


# -- the non-standard formats ------------------------------------------------------------


def _exim(msg: email.message.Message, text: str) -> BounceReport | None:
    failed = msg.get("X-Failed-Recipients")
    subject = str(msg.get("Subject", ""))
    if failed is None and not subject.lower().startswith("warning: message"):
        return None
    action = "failed" if failed is not None else "delayed"
    addresses = [a.strip() for a in str(failed or "").split(",") if a.strip()]
    if not addresses:  # a delay warning names the addresses in the text
        addresses = [m.group(1) for m in re.finditer(r"^\s{2}(\S+@\S+)\s*$", text, re.M)]
    recipients = []
    for address in addresses[:MAX_RECIPIENTS]:
        block = _block_after(text, address)
        recipients.append(_from_text(address, action, block))
    return BounceReport("exim", tuple(recipients))


def _qmail(msg: email.message.Message, text: str) -> BounceReport | None:
    if "this is the qmail-send program" not in text.lower():
        return None
    body = text.split("--- Below this line is a copy of the message.")[0]
    action = "failed" if "permanent error" in body.lower() else "delayed"
    recipients = []
    for block in re.split(r"\n\s*\n", body):
        match = re.match(r"\s*<([^>\s]+@[^>\s]+)>:\s*(.*)", block, re.S)
        if match:
            recipients.append(_from_text(match.group(1), action, match.group(2)))
    return BounceReport("qmail", tuple(recipients[:MAX_RECIPIENTS]))


def _gmail_text(msg: email.message.Message, text: str) -> BounceReport | None:
    lowered = text.lower()
    if "delivery to the following recipient" not in lowered:
        return None
    action = "failed" if "failed permanently" in lowered else "delayed"
    if "delayed" not in lowered and "failed" in lowered:
        action = "failed"
    match = re.search(
        r"delivery to the following recipients?[^\n]*:\s*\n\s*\n?\s*(\S+@\S+)", text, re.I
    )
    if match is None:
        return None
    address = match.group(1).strip("<>")
    details = text[match.end() :]
    return BounceReport("gmail-text", (_from_text(address, action, details),))


def _heuristic(msg: email.message.Message, text: str) -> BounceReport:
    reply = _REPLY.search(text)
    status = _STATUS.search(text)
    if reply is None and status is None:
        return BounceReport("heuristic", ())
    return BounceReport("heuristic", (_from_text("", "failed", text),))


def _from_text(address: str, action: str, block: str) -> RecipientStatus:
    """A status from free text: the first SMTP reply in it, or a qmail ``(#x.y.z)``."""
    qmail = _QMAIL_STATUS.search(block)
    reply = _REPLY.search(block)
    line = ""
    code: int | None = None
    status: str | None = None
    if reply is not None:
        code = int(reply.group(1))
        status = reply.group(2)
        line = block[reply.start() :].split("\n\n")[0]
    if status is None:
        found = _STATUS.search(block)
        status = found.group(0) if found else (qmail.group(1) if qmail else None)
    if not line:
        line = block.strip().split("\n\n")[0]
    if status is None and code is None and action == "failed":
        status = "5.0.0"
    remote = re.search(r"host\s+(\S+)\s+\[", block)
    return RecipientStatus(
        recipient=address.strip().strip("<>"),
        action=action,
        status=status,
        code=code,
        diagnostic=_one_line(line),
        remote_mta=remote.group(1) if remote else None,
    )


def _block_after(text: str, address: str) -> str:
    index = text.find(address)
    if index < 0:
        return text
    return text[index + len(address) :].split("\n\n")[0]


# -- helpers ------------------------------------------------------------------------------


def _plain_text(msg: email.message.Message) -> str:
    """The human-readable text of the report (the first text/plain, or the whole body)."""
    for part in msg.walk():
        if part.get_content_type() == "text/plain" and not part.is_multipart():
            return _decoded(part)
    if not msg.is_multipart():
        return _decoded(msg)
    return ""


def _decoded(part: email.message.Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data[:MAX_TEXT].decode(charset, "replace").replace("\r\n", "\n")
    except LookupError:
        return data[:MAX_TEXT].decode("utf-8", "replace").replace("\r\n", "\n")


def _with_original(report: BounceReport, msg: email.message.Message) -> BounceReport:
    """Add the returned message's Message-ID and Return-Path when the report has them."""
    for part in msg.walk():
        ctype = part.get_content_type()
        headers: email.message.Message | None = None
        if ctype in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
                headers = inner[0]
        elif ctype in ("text/rfc822-headers", "text/global-headers"):
            headers = email.message_from_string(_decoded(part), policy=email_policy.compat32)
        if headers is not None:
            message_id = str(headers.get("Message-ID", "")).strip() or None
            return_path = typed_value(str(headers.get("Return-Path", ""))) or None
            return BounceReport(
                report.format,
                report.recipients,
                report.reporting_mta,
                report.original_envelope_id,
                message_id,
                return_path,
            )
    return report


def _one_line(text: str) -> str:
    clean = "".join(ch if ch.isprintable() else " " for ch in text.replace("\n", " "))
    return " ".join(clean.split())[:1000]


def addresses_in(text: str) -> list[str]:
    """Every address-looking string in ``text`` (for callers that hunt return paths)."""
    return [m.group(1) for m in _ADDRESS.finditer(text)]
