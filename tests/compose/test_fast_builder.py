"""The builder writes messages itself (not through EmailMessage): for a corpus of field
sets, the output parsed by the email package gives back exactly the fields given."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from email.message import EmailMessage
from typing import Any

import pytest

from kakitome.addresses import parse_mailbox
from kakitome.message import Attachment, build_message

NOW = 1_780_000_000.0
LIMIT = 10 * 1024 * 1024

_LONG_JA = "【書留ストア】年末年始の営業日と配送についての大切なお知らせ（必ずお読みください）" * 2
_EMOJI = "🎍 新年のご挨拶 🎉 Happy New Year 🐉 今年もよろしくお願いいたします 🙇‍♀️"

CORPUS: list[dict[str, Any]] = [
    {"from": "info@example.jp", "to": ["a@example.com"], "subject": "hi", "text": "hello"},
    {
        "from": "書留 <info@example.jp>",
        "to": ["山田様 <yamada@example.com>", "佐藤 花子 <hanako@example.com>"],
        "cc": ["鈴木 <suzuki@例え.jp>"],
        "bcc": ["secret@example.org"],
        "subject": "【重要】ご注文の確認 — 書留サービスより、配送状況のお知らせです。",
        "text": "山田様\n\nいつもありがとうございます。\n",
        "html": "<p>山田様</p>\n<p>いつもありがとうございます。</p>",
    },
    {
        "from": "Kakitome Market <news@example.jp>",
        "to": [f"User Number {n} <user{n}@d{n % 7}.example.com>" for n in range(12)],
        "reply_to": ['"Support, Kakitome" <support@example.jp>'],
        "subject": _LONG_JA,
        "text": "ｶﾀｶﾅ 半角 and ASCII mixed\r\nline two\rline three\n" * 40,
        "attachments": [
            Attachment("請求書.pdf", "application/pdf", b"%PDF-1.4\x00\xff" * 100),
            Attachment('report 2026 "final".csv', "text/csv", b"a,b\r\n1,2\r\n"),
            Attachment("empty.bin", "application/octet-stream", b""),
            Attachment(
                "とても長いファイル名の添付ファイルです_年末年始の営業日と配送についてのお知らせ.txt",
                "Text/Plain",
                "本文".encode(),
            ),
        ],
        "headers": {"X-Campaign": "spring", "X-Note": "日本語の値です", "X-Empty": ""},
    },
    {
        "from": '"O\'Brien \\"Pat\\", Jr." <pat@example.com>',
        "to": ["=?utf-8?q?looks_encoded?= <x@example.com>"],
        "subject": "=?utf-8?b?5pil?= is not an encoded word here",
        "html": "<html><body>"
        + "<p>a long line of html without breaks</p>" * 60
        + "</body></html>",
    },
    {
        "from": "info@example.jp",
        "to": ["a@example.com"],
        "subject": "  leading and trailing spaces  ",
        "text": "x = 1\ntrailing spaces   \n\ttab\n" + "=" * 200 + "\n",
    },
    {
        "from": "info@example.jp",
        "to": ["a@example.com"],
        "subject": "A plain ASCII subject that is long enough to need folding across more than "
        "one line of the header, with words of ordinary length",
        "text": "https://example.com/" + "x" * 300 + "\nshort\n",
        "headers": {"List-Unsubscribe": "<https://example.com/u/" + "y" * 90 + ">"},
    },
    {
        "from": _EMOJI + " <emoji@example.jp>",
        "to": ["a@example.com"],
        "subject": _EMOJI * 3,
        "text": _EMOJI,
        "html": "<b>" + _EMOJI + "</b>",
        "attachments": [Attachment("🎍.png", "image/png", bytes(range(256)) * 30)],
    },
    {
        "from": "info@example.jp",
        "to": ["a@example.com"],
        "attachments": [Attachment("only.txt", "text/plain", b"attachment only")],
    },
    {
        "from": "info@example.jp",
        "to": ["やまだ@example.jp"],
        "subject": "件名",
        "text": "SMTPUTF8",
    },
]


def _parse(content: bytes) -> EmailMessage:
    # SMTPUTF8 messages carry UTF-8 in address fields, which message_from_bytes would
    # leave as surrogates.
    if content.isascii():
        parsed = email.message_from_bytes(content, policy=email.policy.default)
    else:
        parsed = email.message_from_string(content.decode("utf-8"), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _name(display_name: str) -> str:
    """A display name compared without its spaces next to non-ASCII text: RFC 2047 says
    the space between two encoded words is not part of the text, but the email package's
    address parser keeps it (its own builder's long names come back the same way)."""
    return re.sub(r" *([^\x00-\x7f]) *", r"\1", display_name)


def _canonical(text: str) -> str:
    """What a text body means: LF line ends, ending in one."""
    text = re.sub(r"\r\n|\r", "\n", text)
    return text if text.endswith("\n") else text + "\n"


def _boxes(parsed: EmailMessage, name: str) -> list[tuple[str, str]]:
    header = parsed[name]
    if header is None:
        return []
    return [(_name(a.display_name), a.addr_spec) for a in header.addresses]


def _expected(values: list[str]) -> list[tuple[str, str]]:
    boxes = [parse_mailbox(v) for v in values]
    out = []
    for box in boxes:
        local = box.local_part
        out.append((_name(box.display_name), f"{local}@{box.domain}"))
    return out


@pytest.mark.parametrize("fields", CORPUS, ids=range(len(CORPUS)))
def test_output_parses_back_to_the_fields(fields: dict[str, Any]) -> None:
    built = build_message(
        from_=fields["from"],
        to=fields.get("to", ()),
        cc=fields.get("cc", ()),
        bcc=fields.get("bcc", ()),
        reply_to=fields.get("reply_to"),
        subject=fields.get("subject", ""),
        text=fields.get("text"),
        html=fields.get("html"),
        attachments=fields.get("attachments", ()),
        headers=fields.get("headers"),
        now=NOW,
        max_size=LIMIT,
    )
    content = built.content
    # CRLF everywhere, no line over 78 columns, 7-bit unless SMTPUTF8 is needed.
    assert b"\n" not in content.replace(b"\r\n", b"")
    assert b"\r" not in content.replace(b"\r\n", b"")
    for line in content.split(b"\r\n"):
        assert len(line.decode("utf-8")) <= 78, line
    assert content.isascii() == (not built.smtputf8)

    parsed = _parse(content)
    assert not parsed.defects, parsed.defects
    assert _boxes(parsed, "From") == _expected([fields["from"]])
    assert _boxes(parsed, "To") == _expected(fields.get("to", []))
    assert _boxes(parsed, "Cc") == _expected(fields.get("cc", []))
    assert _boxes(parsed, "Reply-To") == _expected(fields.get("reply_to") or [])
    assert parsed["Bcc"] is None
    for bcc in fields.get("bcc", []):
        assert parse_mailbox(bcc).address.encode() not in content
    assert (parsed["Subject"] or "") == fields.get("subject", "")
    for name, value in (fields.get("headers") or {}).items():
        assert parsed[name] == value
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["Message-ID"] == built.message_id
    assert parsed["Date"].datetime.timestamp() == NOW
    for single in ("From", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"):
        assert len(parsed.get_all(single) or []) <= 1

    text, html = fields.get("text"), fields.get("html")
    attachments: list[Attachment] = fields.get("attachments", [])
    for part in parsed.walk():
        assert not part.defects, (part.get_content_type(), part.defects)
        if part is not parsed:
            assert part["MIME-Version"] is None
    plain = parsed.get_body(("plain",))
    rich = parsed.get_body(("html",))
    if text is not None or html is None:
        assert plain is not None
        assert plain.get_content_charset() == "utf-8"
        assert _canonical(plain.get_content()) == _canonical(text or "")
    if html is not None:
        assert rich is not None
        assert _canonical(rich.get_content()) == _canonical(html)
    expected_types = (
        ["multipart/alternative", "text/plain", "text/html"]
        if text is not None and html is not None
        else ["text/html" if text is None and html is not None else "text/plain"]
    )
    if attachments:
        expected_types = ["multipart/mixed", *expected_types]
        expected_types += [a.content_type.lower() for a in attachments]
    assert [p.get_content_type() for p in parsed.walk()] == expected_types
    got = list(parsed.iter_attachments())
    assert len(got) == len(attachments)
    for given, part in zip(attachments, got, strict=True):
        assert isinstance(part, EmailMessage)
        assert part.get_filename() == given.filename
        assert part.get_content_disposition() == "attachment"
        assert part.get_payload(decode=True) == given.data


def test_encoded_words_never_split_a_character() -> None:
    """Every encoded word decodes on its own to whole UTF-8 characters."""
    built = build_message(
        from_=_EMOJI + " <e@example.jp>", to=["a@example.com"], subject=_LONG_JA + _EMOJI,
        text="x", now=NOW, max_size=LIMIT,
    )  # fmt: skip
    words = re.findall(rb"=\?utf-8\?b\?([A-Za-z0-9+/=]*)\?=", built.content)
    assert len(words) > 5
    for word in words:
        assert len(word) + 12 <= 75
        base64.b64decode(word).decode("utf-8")  # raises if a character was cut
