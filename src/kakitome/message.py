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
the text). Only when an address has a non-ASCII local part does the message carry raw
UTF-8 in its address fields (RFC 6532) and need SMTPUTF8.

Built messages are written by this module itself (see "writing the header" below), not
through ``email.message.EmailMessage``: that cost about a quarter of the CPU of an API
submission. The ``email`` package is still what parses raw input (``parse_raw``).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.header import decode_header, make_header
from email.message import Message
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

    head: list[str] = [_address_field("From", [header_from])]
    if to_boxes:
        head.append(_address_field("To", to_boxes))
    if cc_boxes:
        head.append(_address_field("Cc", cc_boxes))
    if reply_boxes:
        head.append(_address_field("Reply-To", reply_boxes))
    if subject:
        head.append(_text_field("Subject", subject))
    head.append("Date: " + format_datetime(datetime.fromtimestamp(now, UTC)))
    head.append("Message-ID: " + message_id)
    head.extend(_text_field(name, value) for name, value in extra)
    head.append("MIME-Version: 1.0")

    if text is not None and html is not None:
        body = _multipart("alternative", [_text_part(text, "plain"), _text_part(html, "html")])
    elif html is not None:
        body = _text_part(html, "html")
    else:
        body = _text_part(text or "", "plain")
    if attachments:
        body = _multipart("mixed", [body, *(_attachment_part(att) for att in attachments)])
    head.extend(body.fields)
    header = "\r\n".join(head).encode("utf-8" if smtputf8 else "ascii")
    content = header + b"\r\n\r\n" + body.body
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


# -- writing the header and the MIME parts ourselves -------------------------------------
#
# What the builder writes is a small, fixed set of shapes, so it writes them directly (the
# email package's header registry and refolding cost about a quarter of an API request):
#
# - unstructured text (Subject, extra headers): as given when printable ASCII, folded at
#   spaces; otherwise (non-ASCII, a line that cannot be folded under 78 columns, or text
#   that looks like an encoded word) RFC 2047 "B" encoded words in UTF-8, each at most 75
#   characters, each holding whole characters (a multibyte character is never split), one
#   per line after the first;
# - address lists: ``local@domain`` or ``name <local@domain>``, the name as atoms, a quoted
#   string, or encoded words; folded between addresses and between encoded words;
# - bodies: text as 7bit when it is ASCII with short lines, else quoted-printable or base64
#   (whichever is shorter, estimated from the count of non-ASCII bytes), CRLF inside the
#   encoding (canonical form); attachments base64; lines at most 76 characters;
# - parameters: quoted strings, or RFC 2231 ``name*0*=utf-8''...`` continuations for
#   non-ASCII or long values.
#
# tests/compose/test_fast_builder.py parses the output with the email package and checks it
# against the fields given.

LINE_WIDTH = 78
_ENCODED_WORD_MAX = 75
_EW_PREFIX = "=?utf-8?b?"
_EW_OVERHEAD = len(_EW_PREFIX) + 2
# RFC 5322 atext: a display name made of these and single spaces needs no quoting.
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LOOKS_ENCODED = re.compile(r"=\?.*\?=")
# RFC 2045 token characters (a parameter value of only these needs no quoting).
_TOKEN = re.compile(r"[!#$%&'*+.0-9A-Z^_`a-z|~-]+")
_ATTR_CHAR = frozenset(
    b"!#$&+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz|~"
)
_HIGH_BYTES = bytes(range(128, 256))


@dataclass(frozen=True, slots=True)
class _Part:
    """A MIME entity: its header fields (folded, without line ends) and its body (CRLF)."""

    fields: list[str]
    body: bytes


def _fold(pieces: Sequence[str], first: str) -> str:
    """``first`` then the pieces separated by spaces; a space becomes CRLF and a space
    (a fold) where the line would pass 78 columns. Punctuation between pieces ("," ";")
    is part of the piece before."""
    out = [first]
    column = len(first)
    for index, piece in enumerate(pieces):
        if index and column + 1 + len(piece) > LINE_WIDTH:
            out.append("\r\n " + piece)
            column = 1 + len(piece)
        else:
            out.append(" " + piece)
            column += 1 + len(piece)
    return "".join(out)


def _punctuated(groups: Sequence[Sequence[str]], mark: str) -> list[str]:
    """The groups' pieces in one list, ``mark`` after the last piece of every group but
    the last (", " between addresses, "; " between parameters)."""
    pieces: list[str] = []
    for group in groups:
        if pieces:
            pieces[-1] += mark
        pieces.extend(group)
    return pieces


def _encoded_words(value: str, first_budget: int) -> list[str]:
    """``value`` as RFC 2047 B encoded words in UTF-8: the first at most ``first_budget``
    characters long (at least one character in it), the others at most 75; whole
    characters only."""
    words: list[str] = []
    budget = min(max(first_budget, _EW_OVERHEAD + 4), _ENCODED_WORD_MAX)
    chunk: list[bytes] = []
    size = 0
    for char in value:
        data = char.encode("utf-8")
        if chunk and _EW_OVERHEAD + 4 * ((size + len(data) + 2) // 3) > budget:
            words.append(_EW_PREFIX + base64.b64encode(b"".join(chunk)).decode("ascii") + "?=")
            chunk, size, budget = [], 0, _ENCODED_WORD_MAX
        chunk.append(data)
        size += len(data)
    if chunk or not words:
        words.append(_EW_PREFIX + base64.b64encode(b"".join(chunk)).decode("ascii") + "?=")
    return words


def _text_field(name: str, value: str) -> str:
    """An unstructured field (Subject, extra headers), folded at 78 columns."""
    first = name + ":"
    if value.isascii() and not _LOOKS_ENCODED.search(value):
        words = value.split(" ")
        if all(len(word) <= LINE_WIDTH - 2 for word in words) and value.strip(" \t") == value:
            folded = _fold(words, first)
            if all(len(line) <= LINE_WIDTH for line in folded.split("\r\n")):
                return folded
    return _fold(_encoded_words(value, LINE_WIDTH - len(first) - 1), first)


def _mailbox_pieces(box: Mailbox, budget: int) -> list[str]:
    """A mailbox as foldable pieces: the name's words (or encoded words) and the address;
    ``budget`` is the room on the line for the first piece."""
    address = f"{box.local_part}@{box.domain}"
    name = box.display_name
    if not name:
        return [address]
    angle = f"<{address}>"
    if name.isascii() and not _LOOKS_ENCODED.search(name):
        if _ATOM_PHRASE.fullmatch(name):
            return [*name.split(" "), angle]
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(quoted) <= budget:
            return [quoted, angle]
    return [*_encoded_words(name, budget), angle]


def _address_field(name: str, boxes: Sequence[Mailbox]) -> str:
    groups = [
        _mailbox_pieces(box, LINE_WIDTH - len(name) - 2 if not number else LINE_WIDTH - 2)
        for number, box in enumerate(boxes)
    ]
    return _fold(_punctuated(groups, ","), name + ":")


def _param(name: str, value: str) -> list[str]:
    """A MIME parameter as ``; ``-separated pieces: ``name="value"`` when that is ASCII
    and fits, else RFC 2231 ``name*0*=utf-8''%xx...`` sections that each fit a line."""
    if value.isascii() and value.isprintable():
        piece = name + '="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(piece) <= LINE_WIDTH - 3:
            return [piece]
    # Sections hold whole characters: the email package decodes each one on its own.
    sections: list[str] = []
    chunk: list[str] = []
    used = 0
    room = LINE_WIDTH - 3 - len(name) - len("*00*=") - len("utf-8''")
    for char in value:
        escaped = "".join(
            chr(byte) if byte in _ATTR_CHAR else f"%{byte:02X}" for byte in char.encode("utf-8")
        )
        if chunk and used + len(escaped) > room:
            sections.append("".join(chunk))
            chunk, used = [], 0
            room = LINE_WIDTH - 3 - len(name) - len("*00*=")
        chunk.append(escaped)
        used += len(escaped)
    sections.append("".join(chunk))
    if len(sections) == 1:
        return [f"{name}*=utf-8''{sections[0]}"]
    pieces: list[str] = []
    for number, section in enumerate(sections):
        charset = "utf-8''" if number == 0 else ""
        mark = ";" if number < len(sections) - 1 else ""
        pieces.append(f"{name}*{number}*={charset}{section}{mark}")
    return pieces


def _typed_fields(
    content_type: str, params: Sequence[tuple[str, str]], cte: str | None
) -> list[str]:
    pieces = _punctuated([[content_type], *(_param(n, v) for n, v in params)], ";")
    fields = [_fold(pieces, "Content-Type:")]
    if cte is not None:
        fields.append("Content-Transfer-Encoding: " + cte)
    return fields


def _text_part(text: str, subtype: str) -> _Part:
    """A text/plain or text/html part in UTF-8, canonical CRLF line ends."""
    data = text.encode("utf-8")
    lines = data.splitlines()
    body = b"\r\n".join(lines) + b"\r\n"
    if data.isascii() and all(len(line) <= LINE_WIDTH for line in lines):
        cte = "7bit"
    else:
        # Quoted-printable writes a non-ASCII byte (and "=") as three characters; base64
        # writes 4 for every 3. Soft line breaks ignored: they cost both about the same.
        high = len(data) - len(data.translate(None, _HIGH_BYTES))
        qp_size = len(body) + 2 * (high + data.count(b"="))
        b64_size = (len(body) + 2) // 3 * 4
        if qp_size <= b64_size:
            cte = "quoted-printable"
            body = binascii.b2a_qp(body, istext=True)
            if not body.endswith(b"\r\n"):
                body += b"\r\n"
        else:
            cte = "base64"
            body = _base64_lines(body)
    fields = _typed_fields(f"text/{subtype}", [("charset", "utf-8")], cte)
    return _Part(fields, body)


def _base64_lines(data: bytes) -> bytes:
    """Base64 in lines of 76 characters, each ended by CRLF."""
    encoded = base64.encodebytes(data)  # LF after every 76 characters and at the end
    return encoded.replace(b"\n", b"\r\n") if encoded else b""


def _attachment_part(att: Attachment) -> _Part:
    maintype, _, subtype = att.content_type.partition("/")
    fields = _typed_fields(f"{maintype.lower()}/{subtype.lower()}", [], "base64")
    pieces = _punctuated([["attachment"], _param("filename", att.filename)], ";")
    fields.append(_fold(pieces, "Content-Disposition:"))
    return _Part(fields, _base64_lines(att.data))


def _multipart(subtype: str, parts: Sequence[_Part]) -> _Part:
    """A multipart entity; the boundary ("=_" cannot occur in base64 or quoted-printable)
    is checked against the 7bit parts' bodies."""
    while True:
        boundary = "=_kk_" + secrets.token_hex(12)
        marker = boundary.encode("ascii")
        if not any(marker in part.body for part in parts):
            break
    chunks: list[bytes] = []
    for part in parts:
        chunks.append(b"--" + marker + b"\r\n")
        chunks.append("\r\n".join(part.fields).encode("ascii") + b"\r\n\r\n")
        chunks.append(part.body)
        chunks.append(b"\r\n")  # the delimiter's own CRLF: the part keeps its last line end
    chunks.append(b"--" + marker + b"--\r\n")
    fields = _typed_fields(f"multipart/{subtype}", [("boundary", boundary)], None)
    return _Part(fields, b"".join(chunks))


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
