"""Building messages from fields and checking raw messages."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from kakitome.errors import AddressError, MessageError
from kakitome.message import Attachment, MessageTooLarge, build_message, parse_raw

NOW = 1_780_000_000.0
LIMIT = 1024 * 1024


def _parse(content: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_japanese_subject_round_trips() -> None:
    """A Japanese subject is written as RFC 2047 encoded words and parses back the same."""
    subject = "【重要】ご注文の確認 — 書留サービスより、配送状況のお知らせです。ご確認ください。"
    built = build_message(
        from_="書留 <info@example.jp>",
        to=["山田様 <yamada@example.com>"],
        subject=subject,
        text="山田様\n\nいつもありがとうございます。\n",
        now=NOW,
        max_size=LIMIT,
    )
    assert built.content.isascii()
    assert b"=?utf-8?" in built.content
    assert not built.eight_bit and not built.smtputf8
    parsed = _parse(built.content)
    assert parsed["Subject"] == subject
    assert parsed["From"].addresses[0].display_name == "書留"
    body = parsed.get_body(("plain",))
    assert body is not None
    # MIME text is in canonical form: CRLF line endings inside the encoding too.
    assert body.get_content() == "山田様\r\n\r\nいつもありがとうございます。\r\n"
    for line in built.content.split(b"\r\n"):
        assert len(line) <= 78


def test_structure_and_headers() -> None:
    """Text+HTML is multipart/alternative inside multipart/mixed with the attachment."""
    built = build_message(
        from_="info@example.jp",
        to=["a@example.com"],
        subject="hi",
        text="plain",
        html="<p>html</p>",
        attachments=[Attachment("請求書.pdf", "application/pdf", b"%PDF-1.4\x00\xff")],
        headers={"X-Campaign": "spring"},
        now=NOW,
        max_size=LIMIT,
    )
    parsed = _parse(built.content)
    types = [part.get_content_type() for part in parsed.walk()]
    assert types == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/pdf",
    ]
    attachment = next(parsed.iter_attachments())
    assert isinstance(attachment, EmailMessage)
    assert attachment.get_filename() == "請求書.pdf"
    assert attachment.get_content() == b"%PDF-1.4\x00\xff"
    assert parsed["X-Campaign"] == "spring"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["Message-ID"].endswith("@example.jp>")
    assert parsed["Date"] is not None
    assert built.content.count(b"MIME-Version") == 1
    assert b"\n" not in built.content.replace(b"\r\n", b"")


def test_bcc_not_in_content() -> None:
    """Bcc recipients are in the envelope but nowhere in the content."""
    built = build_message(
        from_="info@example.jp",
        to=["a@example.com"],
        bcc=["hidden@example.org"],
        text="x",
        now=NOW,
        max_size=LIMIT,
    )
    assert [r.address for r in built.recipients] == ["a@example.com", "hidden@example.org"]
    assert b"hidden" not in built.content
    assert b"Bcc" not in built.content


def test_recipients_deduplicated_by_domain_case() -> None:
    """The same recipient in To, Cc and Bcc (domain case differing) is queued once."""
    built = build_message(
        from_="info@example.jp",
        to=["a@Example.com"],
        cc=["a@example.COM"],
        bcc=["a@EXAMPLE.com", "b@example.com"],
        text="x",
        now=NOW,
        max_size=LIMIT,
    )
    assert [r.address for r in built.recipients] == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "hello\r\nBcc: victim@example.com"},
        {"subject": "hello\nX-Injected: yes"},
        {"headers": {"X-Tag": "a\r\nBcc: victim@example.com"}},
        {"attachments": [Attachment("a\r\n.txt", "text/plain", b"x")]},
    ],
)
def test_crlf_in_fields_refused(fields: dict[str, object]) -> None:
    """CR/LF in a subject, header value or filename is refused (header injection)."""
    with pytest.raises(MessageError, match="line break"):
        build_message(
            from_="info@example.jp", to=["a@example.com"], text="x", now=NOW, max_size=LIMIT,
            **fields,  # type: ignore[arg-type]
        )  # fmt: skip


def test_crlf_in_display_name_refused() -> None:
    """A display name carrying CR/LF is refused before anything is built."""
    with pytest.raises(AddressError, match="line break"):
        build_message(
            from_="Evil\r\nBcc: x@example.com <info@example.jp>",
            to=["a@example.com"],
            text="x",
            now=NOW,
            max_size=LIMIT,
        )


@pytest.mark.parametrize("name", ["From", "bcc", "Content-Type", "DKIM-Signature", "Date"])
def test_reserved_extra_headers_refused(name: str) -> None:
    """Extra headers may not replace the ones Kakitome writes."""
    with pytest.raises(MessageError, match="set by Kakitome"):
        build_message(
            from_="info@example.jp",
            to=["a@example.com"],
            text="x",
            headers={name: "value"},
            now=NOW,
            max_size=LIMIT,
        )


def test_built_message_too_large() -> None:
    """A built message over the size limit raises MessageTooLarge."""
    with pytest.raises(MessageTooLarge):
        build_message(
            from_="info@example.jp", to=["a@example.com"], text="x" * 5000, now=NOW, max_size=2000
        )


def test_smtputf8_address_keeps_utf8_headers() -> None:
    """A UTF-8 local part makes the message SMTPUTF8 with raw UTF-8 headers (RFC 6532)."""
    built = build_message(
        from_="info@example.jp", to=["やまだ@example.jp"], subject="件名", text="x", now=NOW,
        max_size=LIMIT,
    )  # fmt: skip
    assert built.smtputf8 and built.eight_bit
    assert "To: やまだ@example.jp".encode() in built.content
    assert _parse(built.content)["Subject"] == "件名"


RAW = b"From: Sender <sender@example.jp>\nTo: a@example.com, b@example.com\nBcc: hidden@example.org\nSubject: =?utf-8?b?5pil44Gu44K744O844Or?=\n\nline one\nline two\n"  # noqa: E501


def test_raw_bare_lf_normalised_and_bcc_stripped() -> None:
    """Bare LF becomes CRLF, Bcc leaves the content, envelope comes from To/Cc/Bcc."""
    composed = parse_raw(RAW, now=NOW, max_size=LIMIT)
    assert b"\r\nline one\r\nline two\r\n" in composed.content
    assert b"\n" not in composed.content.replace(b"\r\n", b"")
    assert b"hidden" not in composed.content
    assert [r.address for r in composed.recipients] == [
        "a@example.com",
        "b@example.com",
        "hidden@example.org",
    ]
    assert composed.subject == "春のセール"
    assert composed.sender is not None and composed.sender.address == "sender@example.jp"
    parsed = _parse(composed.content)
    assert parsed["Message-ID"] and parsed["Date"]


def test_raw_envelope_from_caller() -> None:
    """Given envelope recipients replace the header ones; the null sender is kept."""
    composed = parse_raw(RAW, sender="", recipients=["only@example.net"], now=NOW, max_size=LIMIT)
    assert [r.address for r in composed.recipients] == ["only@example.net"]
    assert composed.sender is None


def test_raw_not_utf8() -> None:
    """Raw input that is not UTF-8 is refused with 'not UTF-8'."""
    with pytest.raises(MessageError, match="not UTF-8"):
        parse_raw(
            b"From: a@example.jp\r\nTo: b@example.jp\r\n\r\n\x82\xa0", now=NOW, max_size=LIMIT
        )


def test_raw_bare_cr_refused() -> None:
    """A bare CR in raw input is refused (T10: no smuggling through odd line endings)."""
    with pytest.raises(MessageError, match="bare CR"):
        parse_raw(
            b"From: a@example.jp\r\nTo: b@example.jp\r\n\r\nx\r.\ry\r\n", now=NOW, max_size=LIMIT
        )


def test_raw_long_line_refused() -> None:
    """A line of more than 998 octets is refused; 998 is accepted."""
    head = b"From: a@example.jp\r\nTo: b@example.jp\r\n\r\n"
    parse_raw(head + b"x" * 998 + b"\r\n", now=NOW, max_size=LIMIT)
    with pytest.raises(MessageError, match="998"):
        parse_raw(head + b"x" * 999 + b"\r\n", now=NOW, max_size=LIMIT)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"To: b@example.jp\r\n\r\nbody", "no From"),
        (b"From: a@example.jp\r\nTo: b@example.jp\r\nbody without separator", "empty line"),
        (b"From: a@example.jp\r\n\r\nbody", "no recipients"),
        (b"From: a@example.jp\r\nnot a header\r\n\r\nbody", "not a 'Name: value'"),
    ],
)
def test_raw_structure_errors(raw: bytes, reason: str) -> None:
    """Raw input needs a From field, a header/body separator and recipients."""
    with pytest.raises(MessageError, match=reason):
        parse_raw(raw, now=NOW, max_size=LIMIT)


def test_raw_too_large() -> None:
    """Raw input over the limit raises MessageTooLarge."""
    with pytest.raises(MessageTooLarge):
        parse_raw(RAW + b"x" * 3000, now=NOW, max_size=2000)
