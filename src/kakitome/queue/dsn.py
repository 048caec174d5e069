"""Delivery status notifications (RFC 3464) for bounced recipients (checklist T37).

One DSN per original message: ``multipart/report; report-type=delivery-status`` with

1. a human-readable ``text/plain`` part in English and Japanese,
2. a ``message/delivery-status`` part: per-message fields (Original-Envelope-Id,
   Reporting-MTA, Arrival-Date) and one block per failed recipient (Original-Recipient,
   Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date),
3. the original message as ``message/rfc822`` (RET=FULL or unspecified, and small
   enough), or its header as ``text/rfc822-headers`` (RET=HDRS, or too large).

The DSN goes from ``MAILER-DAEMON@<helo hostname>`` to the envelope sender, with the null
reverse-path; ``should_send_dsn`` says whether a bounce warrants one at all (RFC 3461:
never to the null sender, and only when NOTIFY includes FAILURE or was not given).

Trusted input: the store's ``Bounce`` rows. Reply texts come from remote servers and are
reduced to printable ASCII on one line before they go into a field.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import EmailMessage, Message
from email.utils import format_datetime

from kakitome.queue.types import Bounce

# Postfix's bounce_size_limit is 50,000 bytes; we return a little more before we fall
# back to the header only.
FULL_RETURN_LIMIT = 100_000

_OUT_POLICY = email_policy.SMTP
_PART_POLICY = email_policy.SMTP.clone(cte_type="7bit")
_STATUS_CODE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")

SUBJECT = "Undelivered Mail Returned to Sender / 配信不能のお知らせ"


def should_send_dsn(bounce: Bounce) -> bool:
    """True when the sender asked for (or did not refuse) failure notices.

    Never for the null sender (that would loop); NOTIFY=NEVER or a NOTIFY list without
    FAILURE means no DSN; no NOTIFY means the default, which is to report failure.
    """
    if not bounce.sender:
        return False
    local = bounce.sender.partition("@")[0].lower()
    if local == "mailer-daemon":
        return False
    if bounce.notify is None or not bounce.notify.strip():
        return True
    keywords = {word.strip().upper() for word in bounce.notify.split(",")}
    if "NEVER" in keywords:
        return False
    return "FAILURE" in keywords


def status_for(bounce: Bounce) -> str:
    """The RFC 3463 status code: the server's enhanced code, or one derived from the
    reply class (5.0.0 / 4.0.0) when the server gave none."""
    if bounce.reply_enhanced and _STATUS_CODE.match(bounce.reply_enhanced):
        # A bounce is final; a 4.x.x that timed out of the queue is reported as failed
        # with its class kept, as Postfix does.
        return bounce.reply_enhanced
    return "4.0.0" if 400 <= bounce.reply_code < 500 else "5.0.0"


def build_dsn(
    bounces: Sequence[Bounce],
    original: bytes,
    *,
    reporting_mta: str,
    now: float,
    arrival_date: float | None = None,
    full_return_limit: int = FULL_RETURN_LIMIT,
) -> bytes:
    """The DSN for the bounced recipients of one message, as CRLF bytes ready to queue.

    ``bounces`` must all belong to the same message (their sender is the DSN's To);
    ``original`` is the message as it was queued (may be empty when it is gone).
    """
    if not bounces:
        raise ValueError("build_dsn needs at least one bounce")
    first = bounces[0]
    if any(b.message_id != first.message_id for b in bounces):
        raise ValueError("build_dsn takes the bounces of one message")
    recipient = first.sender
    when = format_datetime(datetime.fromtimestamp(now, UTC))

    boundary = f"kakitome-dsn-{secrets.token_hex(12)}"
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", original)
    while boundary.encode() in data:  # astronomically unlikely; cheap to rule out
        boundary = f"kakitome-dsn-{secrets.token_hex(12)}"

    report = EmailMessage(policy=_PART_POLICY)
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = recipient
    report["Subject"] = SUBJECT
    report["Date"] = when
    report["Message-ID"] = f"<{int(now)}.dsn.{secrets.token_hex(8)}@{reporting_mta}>"
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: no auto-replies to this
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = "multipart/report; report-type=delivery-status"
    report.set_param("boundary", boundary)
    head = b"".join(_OUT_POLICY.fold_binary(k, v) for k, v in report.raw_items()) + b"\r\n"

    human = EmailMessage(policy=_PART_POLICY)
    human.set_content(_human_text(bounces, reporting_mta), charset="utf-8")
    del human["MIME-Version"]
    parts = [
        human.as_bytes(policy=_OUT_POLICY),
        _status_part(bounces, reporting_mta, now, arrival_date).as_bytes(policy=_OUT_POLICY),
    ]
    if data.strip():  # the third part is optional (RFC 3464 §2): left out when it is gone
        parts.append(_original_part(data, first.ret, full_return_limit))
    # The multipart is assembled here rather than by the email package, whose generator
    # cannot pass an 8-bit original through message/rfc822 unchanged; the original keeps
    # its exact bytes (and its DKIM signature).
    delimiter = b"--" + boundary.encode("ascii")
    body = b"This is a MIME-encapsulated message.\r\n\r\n"
    for part in parts:
        body += delimiter + b"\r\n" + part.rstrip(b"\r\n") + b"\r\n\r\n"
    body += delimiter + b"--\r\n"
    return head + body


def _status_part(
    bounces: Sequence[Bounce], reporting_mta: str, now: float, arrival_date: float | None
) -> Message:
    part = Message(policy=_OUT_POLICY)
    part["Content-Type"] = "message/delivery-status"
    blocks: list[Message | str] = []
    head = Message(policy=_OUT_POLICY)
    envid = bounces[0].envid
    if envid:
        head["Original-Envelope-Id"] = _ascii_line(envid)
    head["Reporting-MTA"] = f"dns; {reporting_mta}"
    if arrival_date is not None:
        head["Arrival-Date"] = format_datetime(datetime.fromtimestamp(arrival_date, UTC))
    blocks.append(head)
    last = format_datetime(datetime.fromtimestamp(now, UTC))
    for bounce in bounces:
        block = Message(policy=_OUT_POLICY)
        if bounce.orcpt:
            block["Original-Recipient"] = _typed_address(bounce.orcpt)
        block["Final-Recipient"] = _typed_address(bounce.recipient)
        block["Action"] = "failed"
        block["Status"] = status_for(bounce)
        if bounce.mx_host:
            block["Remote-MTA"] = f"dns; {bounce.mx_host}"
        block["Diagnostic-Code"] = "smtp; " + _ascii_line(_reply_line(bounce))
        block["Last-Attempt-Date"] = last
        blocks.append(block)
    part.set_payload(blocks)
    return part


def _original_part(data: bytes, ret: str | None, limit: int) -> bytes:
    """The returned content, as a complete MIME part (header, empty line, body)."""
    headers_only = (ret or "").upper() == "HDRS" or len(data) > limit
    if headers_only:
        head, sep, _ = data.partition(b"\r\n\r\n")
        content = head + b"\r\n" if sep else data
        kind = b"text/rfc822-headers"
    else:
        content = data
        kind = b"message/rfc822"
    cte = b"" if content.isascii() else b"Content-Transfer-Encoding: 8bit\r\n"
    return b"Content-Type: " + kind + b"\r\n" + cte + b"\r\n" + content


def _human_text(bounces: Sequence[Bounce], reporting_mta: str) -> str:
    lines_en = [
        f"This is the mail system at host {reporting_mta}.",
        "",
        "I'm sorry to have to inform you that your message could not be delivered to",
        "one or more recipients. The reasons are given below.",
        "",
    ]
    lines_ja = [
        f"このメールは {reporting_mta} のメールシステムから自動的に送信されています。",
        "",
        "お送りいただいたメッセージは、以下の宛先に配信できませんでした。",
        "理由は各宛先の下に記載しています。",
        "",
    ]
    details: list[str] = []
    for bounce in bounces:
        details.append(f"<{bounce.recipient}>:")
        where = f" (host {bounce.mx_host})" if bounce.mx_host else ""
        details.append(f"    {_reply_line(bounce)}{where}")
        details.append("")
    return "\n".join([*lines_en, *details, "-" * 40, "", *lines_ja, *details])


def _reply_line(bounce: Bounce) -> str:
    parts = [str(bounce.reply_code)]
    if bounce.reply_enhanced:
        parts.append(bounce.reply_enhanced)
    if bounce.reply_text:
        parts.append(" ".join(bounce.reply_text.split()))
    return " ".join(parts)


def _typed_address(value: str) -> str:
    """``rfc822; addr`` — or ``utf-8; addr`` for a non-ASCII address (RFC 6533); an ORCPT
    that already carries its type is kept."""
    type_, sep, rest = value.partition(";")
    if sep and re.fullmatch(r"[A-Za-z0-9-]+", type_.strip()):
        return f"{type_.strip()}; {_ascii_line(rest.strip())}"
    if not value.isascii():
        # RFC 6533 §3: utf-8 address type with the address in UTF-8 would need
        # message/global-delivery-status; in a 7-bit report we escape it as \x{HEX}.
        return "utf-8; " + "".join(c if c.isascii() else f"\\x{{{ord(c):X}}}" for c in value)
    return f"rfc822; {value}"


def _ascii_line(text: str) -> str:
    """Printable ASCII on one line: remote servers' texts go into header-like fields."""
    flat = " ".join(text.split())
    return "".join(c if " " <= c <= "~" else "?" for c in flat)
