# ruff: noqa: E501  (real-world bounce texts keep their long lines)
"""DSN corpus: RFC 3464 reports and the common real-world formats parse to the right status;
ARF complaints and TLS-RPT reports parse."""

from __future__ import annotations

import gzip
import json

import pytest

from kakitome.inbound.bounces import parse_bounce
from kakitome.inbound.reports import ReportError, parse_arf, parse_tlsrpt, tlsrpt_json


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


POSTFIX = crlf("""\
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounce+abc@bounce.sender.test
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="B1"

--B1
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<nobody@example.net>: host mail.example.net[192.0.2.5] said: 550 5.1.1
    <nobody@example.net>: Recipient address rejected: User unknown (in reply to
    RCPT TO command)

--B1
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 4F1A22C0
Arrival-Date: Mon, 1 Jan 2024 00:00:00 +0000 (UTC)

Final-Recipient: rfc822; nobody@example.net
Original-Recipient: rfc822;nobody@example.net
Action: failed
Status: 5.1.1
Remote-MTA: dns; mail.example.net
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.net>: Recipient address
    rejected: User unknown

--B1
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <bounce+abc@bounce.sender.test>
Message-ID: <m1@sender.test>
From: news@sender.test
To: nobody@example.net

--B1--
""")

MICROSOFT = crlf("""\
From: postmaster@outlook.com
To: bounce+abc@bounce.sender.test
Subject: Undeliverable: hello
Content-Type: multipart/report; report-type=delivery-status;
	boundary="ms"

--ms
Content-Type: text/plain; charset="us-ascii"

Delivery has failed to these recipients or groups:

someone@outlook.com
The email address you entered couldn't be found.

--ms
Content-Type: message/delivery-status

Reporting-MTA: dns;DM6PR01MB1234.prod.outlook.com
Received-From-MTA: dns;mail.sender.test
Arrival-Date: Mon, 1 Jan 2024 00:00:00 +0000

Final-Recipient: rfc822;someone@outlook.com
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup

--ms--
""")

GMAIL = crlf("""\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: bounce+abc@bounce.sender.test
Subject: Delivery Status Notification (Failure)
Content-Type: multipart/report; boundary="g1"; report-type=delivery-status

--g1
Content-Type: text/plain; charset="UTF-8"

** Address not found **

Your message wasn't delivered to someone@gmail.com because the address couldn't be found.

--g1
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Arrival-Date: Mon, 01 Jan 2024 00:00:00 -0800 (PST)

Final-Recipient: rfc822; someone@gmail.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (142.250.0.26, the server for the domain gmail.com.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist.
Last-Attempt-Date: Mon, 01 Jan 2024 00:00:01 -0800 (PST)

--g1--
""")

GMAIL_OLD = crlf("""\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: bounce+abc@bounce.sender.test
Subject: Delivery Status Notification (Failure)
Content-Type: text/plain; charset=ISO-8859-1

Delivery to the following recipient failed permanently:

     someone@example.org

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the server for the recipient domain example.org by mx.example.org. [192.0.2.9].

The error that the other server returned was:
550 5.2.1 The email account that you tried to reach is disabled.
""")

EXIM = crlf("""\
From: Mail Delivery System <Mailer-Daemon@mx.exim.test>
To: bounce+abc@bounce.sender.test
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: lost@exim.test
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  lost@exim.test
    host mail.exim.test [192.0.2.7]
    SMTP error from remote mail server after RCPT TO:<lost@exim.test>:
    550 5.1.1 <lost@exim.test>: Recipient address rejected: User unknown in virtual mailbox table

------ This is a copy of the message, including all the headers. ------

Return-path: <bounce+abc@bounce.sender.test>
Subject: hello
""")

EXIM_FULL = crlf("""\
From: Mail Delivery System <Mailer-Daemon@mx.exim.test>
To: bounce+abc@bounce.sender.test
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: full@exim.test

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  full@exim.test
    host mail.exim.test [192.0.2.7]
    SMTP error from remote mail server after end of data:
    552 5.2.2 Mailbox full

""")

QMAIL = crlf("""\
From: MAILER-DAEMON@qmail.test
To: bounce+abc@bounce.sender.test
Subject: failure notice

Hi. This is the qmail-send program at qmail.test.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<gone@qmail.test>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

Return-Path: <bounce+abc@bounce.sender.test>
""")

QMAIL_REMOTE = crlf("""\
From: MAILER-DAEMON@qmail.test
Subject: failure notice

Hi. This is the qmail-send program at qmail.test.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<far@remote.test>:
192.0.2.8 does not like recipient.
Remote host said: 550 5.7.1 Relaying denied
Giving up on 192.0.2.8.

--- Below this line is a copy of the message.
""")

DELAYED = crlf("""\
From: MAILER-DAEMON@mx.example.net
Subject: Delayed Mail (still being retried)
Content-Type: multipart/report; report-type=delivery-status; boundary="d"

--d
Content-Type: text/plain

Your message has not been delivered yet.

--d
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; slow@example.net
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mail.example.net[192.0.2.5]:25: Connection timed out

--d--
""")

HEURISTIC = crlf("""\
From: postmaster@old.test
Subject: Returned mail

Your message could not be delivered.
Reason: 554 5.7.1 Message rejected as spam
""")


@pytest.mark.parametrize(
    ("raw", "fmt", "recipient", "action", "status", "code", "permanent"),
    [
        (POSTFIX, "rfc3464", "nobody@example.net", "failed", "5.1.1", 550, True),
        (MICROSOFT, "rfc3464", "someone@outlook.com", "failed", "5.1.10", 550, True),
        (GMAIL, "rfc3464", "someone@gmail.com", "failed", "5.1.1", 550, True),
        (GMAIL_OLD, "gmail-text", "someone@example.org", "failed", "5.2.1", 550, True),
        (EXIM, "exim", "lost@exim.test", "failed", "5.1.1", 550, True),
        (EXIM_FULL, "exim", "full@exim.test", "failed", "5.2.2", 552, False),
        (QMAIL, "qmail", "gone@qmail.test", "failed", "5.1.1", None, True),
        (QMAIL_REMOTE, "qmail", "far@remote.test", "failed", "5.7.1", 550, True),
        (DELAYED, "rfc3464", "slow@example.net", "delayed", "4.4.1", None, False),
        (HEURISTIC, "heuristic", "", "failed", "5.7.1", 554, True),
    ],
    ids=[
        "postfix",
        "microsoft",
        "gmail",
        "gmail-old",
        "exim",
        "exim-full",
        "qmail",
        "qmail-remote",
        "delayed",
        "heuristic",
    ],
)
def test_dsn_corpus(
    raw: bytes,
    fmt: str,
    recipient: str,
    action: str,
    status: str,
    code: int | None,
    permanent: bool,
) -> None:
    """Each format yields the recipient, action, status, reply code and permanence."""
    report = parse_bounce(raw)
    assert report is not None
    assert report.format == fmt
    (first,) = report.recipients
    assert first.recipient == recipient
    assert first.action == action
    assert first.status == status
    assert first.code == code
    assert first.permanent is permanent
    assert "\n" not in first.diagnostic


def test_postfix_report_carries_the_returned_headers() -> None:
    """The returned message's Return-Path and Message-ID are found (to match the message)."""
    report = parse_bounce(POSTFIX)
    assert report is not None
    assert report.original_return_path == "bounce+abc@bounce.sender.test"
    assert report.original_message_id == "<m1@sender.test>"
    assert report.reporting_mta == "mx.example.net"


def test_kakitome_own_dsn_parses() -> None:
    """A DSN built by kakitome.queue.dsn parses back to the bounce it reports (T37)."""
    from kakitome.queue.dsn import build_dsn
    from kakitome.queue.types import Bounce

    bounce = Bounce(
        1,
        "m",
        "x@example.net",
        "s@sender.test",
        550,
        "5.1.1",
        "no such user",
        "mx.example.net",
        None,
        None,
        None,
        None,
    )
    raw = build_dsn([bounce], b"Subject: hi\r\n\r\nbody\r\n", reporting_mta="k.test", now=0.0)
    report = parse_bounce(raw)
    assert report is not None and report.format == "rfc3464"
    assert report.recipients[0].recipient == "x@example.net"
    assert report.recipients[0].status == "5.1.1"


ARF = crlf("""\
From: <feedback@fbl.example.net>
To: <fbl@bounce.sender.test>
Subject: FW: hello
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
	boundary="part1"

--part1
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP 192.0.2.1.

--part1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <bounce+abc@bounce.sender.test>
Original-Rcpt-To: <angry@example.net>
Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT
Source-IP: 192.0.2.1
Reported-Domain: sender.test

--part1
Content-Type: message/rfc822
Content-Disposition: inline

From: <news@sender.test>
Return-Path: <bounce+abc@bounce.sender.test>
Received: from mailserver.example.net (mailserver.example.net [192.0.2.1])
To: <angry@example.net>
Subject: hello
Message-ID: <8787KJKJ3K4J3K4J3K4J3.mail@sender.test>

Buy now.

--part1--
""")


def test_arf_complaint_parses() -> None:
    """RFC 5965 report: type, original sender and recipient, returned message fields."""
    complaint = parse_arf(ARF)
    assert complaint is not None
    assert complaint.feedback_type == "abuse"
    assert complaint.original_mail_from == "bounce+abc@bounce.sender.test"
    assert complaint.original_rcpt_to == ("angry@example.net",)
    assert complaint.original_return_path == "bounce+abc@bounce.sender.test"
    assert complaint.original_to == ("angry@example.net",)
    assert parse_arf(POSTFIX) is None


TLSRPT_DOC = {
    "organization-name": "Company-X",
    "date-range": {
        "start-datetime": "2016-04-01T00:00:00Z",
        "end-datetime": "2016-04-01T23:59:59Z",
    },
    "contact-info": "sts-reporting@company-x.example",
    "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    "policies": [
        {
            "policy": {
                "policy-type": "sts",
                "policy-string": ["version: STSv1"],
                "policy-domain": "sender.test",
                "mx-host": ["*.mail.sender.test"],
            },
            "summary": {"total-successful-session-count": 5326, "total-failure-session-count": 303},
            "failure-details": [
                {"result-type": "certificate-expired", "failed-session-count": 100}
            ],
        }
    ],
}


def tlsrpt_mail(payload: bytes, ctype: str = "application/tlsrpt+gzip") -> bytes:
    import base64

    b64 = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    return (
        crlf(
            "From: reporter@company-x.example\nTo: tls-reports@bounce.sender.test\n"
            "Subject: Report Domain: sender.test Submitter: company-x.example Report-ID: <x>\n"
            'Content-Type: multipart/report; report-type="tlsrpt"; boundary="t"\n\n'
            "--t\nContent-Type: text/plain\n\nTLS report\n\n"
            f"--t\nContent-Type: {ctype}\nContent-Transfer-Encoding: base64\n"
            'Content-Disposition: attachment; filename="r.json.gz"\n\n'
        )
        + b64.encode()
        + b"\r\n--t--\r\n"
    )


def test_tlsrpt_gzip_report_parses() -> None:
    """RFC 8460 report mail (gzip): counts summed, dates read, the JSON kept."""
    doc = tlsrpt_json(tlsrpt_mail(gzip.compress(json.dumps(TLSRPT_DOC).encode())), max_bytes=10**6)
    assert doc is not None
    report = parse_tlsrpt(doc)
    assert report.organization == "Company-X"
    assert (report.successful, report.failed) == (5326, 303)
    assert report.start == 1459468800.0


def test_tlsrpt_gzip_bomb_refused() -> None:
    """A report that inflates past the ceiling is refused, not inflated."""
    bomb = gzip.compress(b"{" + b" " * 5_000_000 + b"}")
    with pytest.raises(ReportError):
        tlsrpt_json(tlsrpt_mail(bomb), max_bytes=100_000)


def test_tlsrpt_without_required_fields_refused() -> None:
    """A JSON document missing RFC 8460 fields is not a report."""
    with pytest.raises(ReportError):
        parse_tlsrpt(b'{"organization-name": "x"}')
