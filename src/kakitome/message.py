"""Build RFC 5322 messages from fields, and check raw messages handed to us.

What it trusts: nothing; fields and raw bytes come from API clients, the CLI or SMTP
submission. What it enforces (every refusal is a ``MessageError`` in plain words):

- no CR or LF in any header value, name or address given as a field (header injection);
- extra headers may not replace the ones we write (From, To, Date, MIME structure, ...);
- raw input is UTF-8, has no bare CR, a From field and an empty line after the header;
  lines end in CRLF on the way out (T10) and none is longer than 998 octets
  (RFC 5322 §2.1.1);
- the size limit ``settings.delivery.max_message_size`` (``MessageTooLarge``).

Built messages are 7-bit wherever the addresses allow: a Japanese subject becomes RFC 2047
encoded words, bodies are UTF-8 in quoted-printable or base64 (whichever is shorter for
the text, as the stdlib chooses). Only when an address has a non-ASCII local part does the
message carry raw UTF-8 headers (RFC 6532) and need SMTPUTF8.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from email.utils import format_datetime, getaddresses
from pathlib import PurePosixPath, PureWindowsPath

from kakitome.addresses import Mailbox, parse_address, parse_mailbox
from kakitome.errors import AddressError, MessageError

# RFC 5322 §2.1.1: at most 998 characters per line, excluding CRLF.
MAX_LINE_OCTETS = 998

# Headers the builder writes itself; "extra headers" may not set or repeat them.
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "From", "Sender", "To", "Cc", "Bcc", "Reply-To", "Subject", "Date", "Message-ID",
        "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
        "Content-ID", "Return-Path", "Received", "DKIM-Signature", "ARC-Seal",
        "ARC-Message-Signature", "ARC-Authentication-Results", "Authentication-Results",
        "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Bcc",
        "Resent-Date", "Resent-Message-ID",
    )
)  # fmt: skip
# RFC 5322 §3.6.8 field name: printable ASCII except colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")

# Parts are encoded under a 7-bit policy so that bodies come out as 7bit, quoted-printable
# or base64, never 8bit; the whole message is then written with CRLF line endings.
_PART_POLICY = email_policy.SMTP.clone(cte_type="7bit")
_ASCII_OUT = email_policy.SMTP
_UTF8_OUT = email_policy.SMTPUTF8


class MessageTooLarge(MessageError):
    """The message is bigger than ``delivery.max_message_size`` (HTTP 413)."""


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ComposedMessage:
    """A message ready for signing and storing: content is CRLF and final but for DKIM."""

    content: bytes
    sender: Mailbox | None  # envelope sender; None is the null sender <>
    header_from: Mailbox
    subject: str
    recipients: tuple[Mailbox, ...]
    message_id: str
    smtputf8: bool
    eight_bit: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "eight_bit", not self.content.isascii())


def check_header_value(name: str, value: str) -> None:
    """Refuse CR, LF and other control characters (but tab) in a header value."""
    if "\r" in value or "\n" in value:
        raise MessageError(f"the {name} contains a line break (CR or LF), which is not allowed")
    if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", value):
        raise MessageError(f"the {name} contains a control character")


def build_message(
    *,
    from_: str | Mailbox,
    to: Sequence[str | Mailbox] = (),
    cc: Sequence[str | Mailbox] = (),
    bcc: Sequence[str | Mailbox] = (),
    reply_to: Sequence[str | Mailbox] | str | None = None,
    subject: str = "",
    text: str | None = None,
    html: str | None = None,
    attachments: Sequence[Attachment] = (),
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    sender: str | Mailbox | None = None,
    now: float,
    max_size: int,
    message_id_domain: str | None = None,
) -> ComposedMessage:
    """Build a message from fields. Raises AddressError or MessageError before anything
    is produced; Bcc recipients are in ``recipients`` but never in the content.

    ``sender`` is the envelope sender (defaults to the From address); the Message-ID is
    made on ``message_id_domain`` (defaults to the From domain).
    """
    header_from = _mailbox(from_, "From")
    to_boxes = [_mailbox(a, "To") for a in to]
    cc_boxes = [_mailbox(a, "Cc") for a in cc]
    bcc_boxes = [_mailbox(a, "Bcc") for a in bcc]
    if isinstance(reply_to, str | Mailbox):
        reply_to = [reply_to]
    reply_boxes = [_mailbox(a, "Reply-To") for a in reply_to or ()]
    envelope_from = header_from if sender is None else _mailbox(sender, "envelope sender")
    recipients = dedupe_recipients([*to_boxes, *cc_boxes, *bcc_boxes])
    if not recipients:
        raise MessageError("the message has no recipients (to, cc or bcc)")
    check_header_value("subject", subject)
    extra = _extra_headers(headers)
    if text is None and html is None and not attachments:
        raise MessageError("the message needs a text body, an HTML body or an attachment")
    for att in attachments:
        _check_attachment(att)

    smtputf8 = any(b.smtputf8 for b in [header_from, envelope_from, *recipients, *reply_boxes])
    msgid_domain = message_id_domain or header_from.domain
    message_id = f"<{int(now)}.{secrets.token_hex(10)}@{msgid_domain}>"

    msg = EmailMessage(policy=_PART_POLICY)
    msg["From"] = header_from.header_address()
    if to_boxes:
        msg["To"] = [b.header_address() for b in to_boxes]
    if cc_boxes:
        msg["Cc"] = [b.header_address() for b in cc_boxes]
    if reply_boxes:
        msg["Reply-To"] = [b.header_address() for b in reply_boxes]
    if subject:
        msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = message_id
    for name, value in extra:
        msg[name] = value
    # set_content would add MIME-Version too; setting it first keeps it with the others.
    msg["MIME-Version"] = "1.0"
    if text is not None:
        msg.set_content(text, subtype="plain", charset="utf-8")
        if html is not None:
            msg.add_alternative(html, subtype="html", charset="utf-8")
    elif html is not None:
        msg.set_content(html, subtype="html", charset="utf-8")
    else:
        msg.set_content("", subtype="plain", charset="utf-8")
    for att in attachments:
        maintype, _, subtype = att.content_type.partition("/")
        msg.add_attachment(
            att.data, maintype=maintype.lower(), subtype=subtype.lower(), filename=att.filename
        )

    for part in msg.walk():
        if part is not msg:
            # add_alternative/add_attachment make parts that carry their own MIME-Version;
            # RFC 2045 wants it only at the top.
            del part["MIME-Version"]
    content = _normalise_newlines(msg.as_bytes(policy=_UTF8_OUT if smtputf8 else _ASCII_OUT))
    _check_size(content, max_size)
    return ComposedMessage(
        content=content,
        sender=envelope_from,
        header_from=header_from,
        subject=subject,
        recipients=tuple(recipients),
        message_id=message_id,
        smtputf8=smtputf8,
    )


def parse_raw(
    content: bytes,
    *,
    sender: str | None = None,
    recipients: Sequence[str] | None = None,
    now: float,
    max_size: int,
    message_id_domain: str | None = None,
) -> ComposedMessage:
    """Check a raw RFC 5322 message and prepare it for the queue.

    Line endings become CRLF; Bcc fields are removed from the content; Date and Message-ID
    are added when missing. Envelope recipients are ``recipients`` when given, else the
    addresses in To, Cc and Bcc. ``sender`` "" means the null sender; None takes the
    address in From.
    """
    if not isinstance(content, bytes | bytearray):
        raise MessageError("a raw message must be bytes")
    # Checked before and after normalisation: once on what we were sent (cheap refusal of
    # huge input), once on what we would store.
    _check_size(content, max_size)
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(
            f"the message is not UTF-8 (invalid byte at offset {exc.start}); "
            "encode non-ASCII text as UTF-8 or with MIME encodings"
        ) from exc
    if re.search(rb"\r(?!\n)", content):
        raise MessageError("the message contains a bare CR (a CR not followed by LF)")
    data = _normalise_newlines(bytes(content))
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise MessageError("the message has no empty line between the header and the body")
    lines = head.split(b"\r\n")
    for number, line in enumerate([*lines, b"", *body.split(b"\r\n")], start=1):
        if len(line) > MAX_LINE_OCTETS:
            raise MessageError(
                f"line {number} is {len(line)} octets long; the limit is {MAX_LINE_OCTETS}"
            )
    fields = _header_fields(lines)
    names = [name.lower() for name, _ in fields]
    if "from" not in names:
        raise MessageError("the message has no From field")
    for single in ("from", "subject", "date", "message-id", "sender", "to", "cc"):
        if names.count(single) > 1:
            raise MessageError(f"the message has more than one {single.title()} field")

    parsed = HeaderParser(policy=email_policy.compat32).parsestr(head.decode("utf-8") + "\r\n\r\n")
    from_boxes = _header_mailboxes(parsed, "From")
    if not from_boxes:
        raise MessageError("the From field has no address")
    header_from = from_boxes[0]
    if sender is None:
        envelope_from: Mailbox | None = header_from
    elif sender == "":
        envelope_from = None
    else:
        envelope_from = _mailbox(sender, "envelope sender")
    if recipients is not None:
        rcpt = dedupe_recipients([_mailbox(r, "recipient") for r in recipients])
    else:
        rcpt = dedupe_recipients(
            [*_header_mailboxes(parsed, "To"), *_header_mailboxes(parsed, "Cc"),
             *_header_mailboxes(parsed, "Bcc")]
        )  # fmt: skip
    if not rcpt:
        raise MessageError("the message has no recipients (none given and no To, Cc or Bcc)")

    kept = _without_field(lines, "bcc")
    message_id = parsed.get("Message-ID", "").strip()
    added: list[bytes] = []
    if "date" not in names:
        added.append(b"Date: " + format_datetime(datetime.fromtimestamp(now, UTC)).encode())
    if not message_id:
        message_id = (
            f"<{int(now)}.{secrets.token_hex(10)}@{message_id_domain or header_from.domain}>"
        )
        added.append(b"Message-ID: " + message_id.encode("ascii"))
    final = b"\r\n".join([*kept, *added]) + b"\r\n\r\n" + body
    _check_size(final, max_size)

    smtputf8 = not head.isascii() or any(
        b.smtputf8 for b in [header_from, *rcpt, *([envelope_from] if envelope_from else [])]
    )
    return ComposedMessage(
        content=final,
        sender=envelope_from,
        header_from=header_from,
        subject=_decoded(parsed.get("Subject", "")),
        recipients=tuple(rcpt),
        message_id=message_id,
        smtputf8=smtputf8,
    )


def dedupe_recipients(boxes: Iterable[Mailbox]) -> list[Mailbox]:
    """Drop repeated recipients, keeping the first; the domain compares without case."""
    seen: set[str] = set()
    out: list[Mailbox] = []
    for box in boxes:
        if box.key not in seen:
            seen.add(box.key)
            out.append(box)
    return out


def _mailbox(value: str | Mailbox, role: str) -> Mailbox:
    if isinstance(value, Mailbox):
        return value
    try:
        return parse_mailbox(value)
    except AddressError as exc:
        raise AddressError(f"{role}: {exc}") from exc


def _extra_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    out: list[tuple[str, str]] = []
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, str):
            raise MessageError("header names and values must be text")
        if not _FIELD_NAME.fullmatch(name):
            raise MessageError(
                f"{name!r} is not a valid header name (printable ASCII without ':' or spaces)"
            )
        if name.lower() in RESERVED_HEADERS or name.lower().startswith("content-"):
            raise MessageError(f"the {name} header is set by Kakitome and cannot be given")
        check_header_value(f"{name} header", value)
        out.append((name, value))
    return out


def _check_attachment(att: Attachment) -> None:
    check_header_value("attachment filename", att.filename)
    base = PureWindowsPath(PurePosixPath(att.filename).name).name
    if not base or base != att.filename:
        raise MessageError(f"the attachment filename {att.filename!r} must be a plain file name")
    if not _MIME_TYPE.fullmatch(att.content_type):
        raise MessageError(
            f"the attachment content type {att.content_type!r} is not of the form type/subtype"
        )
    if att.content_type.lower().startswith(("multipart/", "message/")):
        raise MessageError("an attachment cannot have a multipart/ or message/ content type")


def _check_size(content: bytes, max_size: int) -> None:
    if len(content) > max_size:
        raise MessageTooLarge(
            f"the message is {len(content):,} bytes; the limit is {max_size:,} bytes"
        )


def _normalise_newlines(data: bytes) -> bytes:
    """CRLF, bare LF and bare CR all become CRLF."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def _header_fields(lines: list[bytes]) -> list[tuple[str, bytes]]:
    """Split header lines into (name, raw field) and refuse anything that is neither a
    field nor a continuation line."""
    fields: list[tuple[str, bytes]] = []
    for number, line in enumerate(lines, start=1):
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise MessageError("the header starts with a continuation line")
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not re.fullmatch(rb"[!-9;-~]+", name):
            raise MessageError(
                f"header line {number} is not a 'Name: value' field "
                "(is the empty line between header and body missing?)"
            )
        fields.append((name.decode("ascii"), line))
    return fields


def _without_field(lines: list[bytes], lower_name: str) -> list[bytes]:
    kept: list[bytes] = []
    skipping = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.partition(b":")[0].strip().lower() == lower_name.encode()
        if not skipping:
            kept.append(line)
    return kept


def _header_mailboxes(parsed: Message, name: str) -> list[Mailbox]:
    values = [_unfold(str(v)) for v in parsed.get_all(name, [])]
    out: list[Mailbox] = []
    for display, address in getaddresses(values):
        if not address:
            continue  # group syntax such as "undisclosed-recipients:;"
        try:
            box = parse_address(address)
        except AddressError as exc:
            raise AddressError(f"{name}: {exc}") from exc
        out.append(Mailbox(box.local_part, box.domain, _decoded(display)))
    return out


def _decoded(value: object) -> str:
    """A header value with RFC 2047 encoded words decoded; undecodable text kept as is."""
    text = _unfold(str(value))
    try:
        return str(make_header(decode_header(text)))
    except (UnicodeError, LookupError, ValueError):
        return text


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value)
