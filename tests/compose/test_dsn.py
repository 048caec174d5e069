"""RFC 3464 delivery status notifications (T37)."""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from email.message import EmailMessage, Message

import pytest

from kakitome.queue.dsn import build_dsn, should_send_dsn
from kakitome.queue.types import Bounce

NOW = 1_780_000_000.0
ORIGINAL = (
    b"From: Sender <sender@example.jp>\r\nTo: x@dest.test\r\nSubject: hello\r\n"
    b"Message-ID: <orig.1@example.jp>\r\n\r\n" + "こんにちは\r\n".encode()
)
BOUNCE = Bounce(
    delivery_id=1,
    message_id="m1",
    recipient="x@dest.test",
    sender="sender@example.jp",
    reply_code=550,
    reply_enhanced="5.1.1",
    reply_text="User unknown\nin virtual mailbox table",
    mx_host="mx1.dest.test",
    notify=None,
    orcpt="rfc822;X@Dest.test",
    envid="ENV-42",
    ret=None,
)


def _parse(content: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _parts(message: EmailMessage) -> list[EmailMessage]:
    payload = message.get_payload()
    assert isinstance(payload, list)
    parts = [p for p in payload if isinstance(p, EmailMessage)]
    assert len(parts) == len(payload)
    return parts


def _status_blocks(dsn: EmailMessage) -> list[Message]:
    status = _parts(dsn)[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    return [b for b in blocks if isinstance(b, Message)]


def test_dsn_structure_and_fields() -> None:
    """T37: multipart/report with human part, delivery-status fields and the original."""
    second = replace(
        BOUNCE, delivery_id=2, recipient="y@dest.test", reply_code=554, reply_enhanced=None,
        reply_text="no", mx_host=None, orcpt=None,
    )  # fmt: skip
    content = build_dsn(
        [BOUNCE, second], ORIGINAL, reporting_mta="mta.example.jp", now=NOW, arrival_date=NOW - 60
    )
    assert b"\n" not in content.replace(b"\r\n", b"")
    dsn = _parse(content)
    assert dsn.defects == []
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["From"].addresses[0].addr_spec == "MAILER-DAEMON@mta.example.jp"
    assert dsn["To"] == "sender@example.jp"
    assert "配信不能" in dsn["Subject"]
    assert dsn["Auto-Submitted"] == "auto-replied"
    parts = _parts(dsn)
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    human = parts[0].get_content()
    assert "could not be delivered" in human and "配信できませんでした" in human
    assert "550 5.1.1 User unknown" in human

    head, first, other = _status_blocks(dsn)
    assert head["Reporting-MTA"] == "dns; mta.example.jp"
    assert head["Original-Envelope-Id"] == "ENV-42"
    assert email.utils.parsedate_to_datetime(head["Arrival-Date"]).timestamp() == NOW - 60
    assert first["Final-Recipient"] == "rfc822; x@dest.test"
    assert first["Original-Recipient"] == "rfc822; X@Dest.test"
    assert first["Action"] == "failed"
    assert first["Status"] == "5.1.1"
    assert first["Remote-MTA"] == "dns; mx1.dest.test"
    assert first["Diagnostic-Code"] == "smtp; 550 5.1.1 User unknown in virtual mailbox table"
    assert first["Last-Attempt-Date"]
    # No enhanced code from the server: derived from the reply class.
    assert other["Status"] == "5.0.0"
    assert other["Remote-MTA"] is None and other["Original-Recipient"] is None

    returned = _parts(parts[2])[0]
    assert returned["Message-ID"] == "<orig.1@example.jp>"
    assert ORIGINAL in content  # the original travels byte for byte


def test_dsn_ret_hdrs_returns_headers_only() -> None:
    """T37: RET=HDRS returns text/rfc822-headers without the body."""
    content = build_dsn(
        [replace(BOUNCE, ret="HDRS")], ORIGINAL, reporting_mta="mta.example.jp", now=NOW
    )
    part = _parts(_parse(content))[2]
    assert part.get_content_type() == "text/rfc822-headers"
    assert "Subject: hello" in part.get_content()
    assert "こんにちは".encode() not in content


def test_dsn_large_original_returns_headers_only() -> None:
    """A large original is returned as its header only, whatever RET says."""
    big = ORIGINAL + b"x" * 200 + b"\r\n"
    content = build_dsn(
        [BOUNCE], big, reporting_mta="mta.example.jp", now=NOW, full_return_limit=100
    )
    assert _parts(_parse(content))[2].get_content_type() == "text/rfc822-headers"


def test_dsn_status_for_transient_expiry() -> None:
    """A 4xx that expired in the queue keeps its enhanced code (or 4.0.0) and Action failed."""
    content = build_dsn(
        [replace(BOUNCE, reply_code=451, reply_enhanced=None, reply_text="try later")],
        ORIGINAL,
        reporting_mta="mta.example.jp",
        now=NOW,
    )
    block = _status_blocks(_parse(content))[1]
    assert (block["Action"], block["Status"]) == ("failed", "4.0.0")


def test_dsn_needs_bounces_of_one_message() -> None:
    """build_dsn refuses an empty list and bounces from different messages."""
    with pytest.raises(ValueError):
        build_dsn([], ORIGINAL, reporting_mta="h", now=NOW)
    with pytest.raises(ValueError):
        build_dsn([BOUNCE, replace(BOUNCE, message_id="m2")], ORIGINAL, reporting_mta="h", now=NOW)


@pytest.mark.parametrize(
    ("sender", "notify", "expected"),
    [
        ("sender@example.jp", None, True),
        ("sender@example.jp", "FAILURE", True),
        ("sender@example.jp", "SUCCESS,FAILURE", True),
        ("sender@example.jp", "failure,delay", True),
        ("sender@example.jp", "NEVER", False),
        ("sender@example.jp", "SUCCESS,DELAY", False),
        ("", None, False),
        ("MAILER-DAEMON@example.jp", None, False),
    ],
)
def test_should_send_dsn(sender: str, notify: str | None, expected: bool) -> None:
    """T37: never to the null sender; NOTIFY=NEVER or without FAILURE suppresses the DSN."""
    assert should_send_dsn(replace(BOUNCE, sender=sender, notify=notify)) is expected


def test_dsn_without_original() -> None:
    """When the original is gone, the DSN has only the human and status parts."""
    dsn = _parse(build_dsn([BOUNCE], b"", reporting_mta="mta.example.jp", now=NOW))
    assert [p.get_content_type() for p in _parts(dsn)] == [
        "text/plain",
        "message/delivery-status",
    ]
