"""Replies over the wire: enhanced status codes on every reply (RFC 2034, RFC 3463), the
MX without TLS (T4: 454), and bare ``postmaster`` (RFC 5321 §4.5.1)."""

from __future__ import annotations

import base64
import json
import re

from kakitome.inbound.users import hash_password
from tests.inbound.conftest import INBOUND_DOMAIN, RawClient, Running, StartInbound

ENHANCED = re.compile(r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3} ")
PASSWORD = "correct horse battery staple"


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class _Transcript:
    """Commands sent and the replies they got, for one assertion over all of them."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.seen: list[tuple[str, str]] = []

    async def cmd(self, line: str) -> str:
        reply = await self.client.cmd(line)
        self.seen.append((line, reply))
        return reply

    async def send(self, data: bytes, what: str) -> str:
        await self.client.send(data)
        reply = await self.client.reply()
        self.seen.append((what, reply))
        return reply

    def without_enhanced_code(self) -> list[tuple[str, str]]:
        """(command, reply line) for every line lacking an enhanced code, except where RFC
        2034 §3 wants none (replies to HELO/EHLO) and the intermediate 334 and 354 (RFC
        3463 defines classes 2, 4 and 5 only)."""
        bad = []
        for command, reply in self.seen:
            if command.upper().startswith(("EHLO", "HELO")):
                continue
            for line in reply.splitlines():
                if line.startswith(("334 ", "354 ")):
                    continue
                if not ENHANCED.match(line):
                    bad.append((command, line))
        return bad


def _listing(bad: list[tuple[str, str]]) -> str:
    return "replies without an enhanced code:\n" + "\n".join(f"  {c!r} -> {r}" for c, r in bad)


async def test_every_mx_reply_carries_an_enhanced_status_code(
    start_inbound: StartInbound,
) -> None:
    """Every MX reply but the greeting and HELO/EHLO replies has an RFC 3463 code: unknown
    and malformed commands, wrong order, bad arguments and parameters, HELP, VRFY, EXPN,
    inside TLS too (RFC 2034)."""
    running = await start_inbound(INBOUND__CHECK_AUTHENTICATION="false")
    client = await RawClient.connect(running.mx)
    t = _Transcript(client)
    assert (await t.cmd("")).startswith("500 5.5.2")  # empty line
    assert (await t.cmd("FOO bar")).startswith("500 5.5.2")  # not recognized
    assert (await t.cmd("MAIL FROM:<a@sender.test>")).startswith("503 5.5.1")  # no HELO
    await t.cmd("HELO client.test")
    assert (await t.cmd("AUTH PLAIN AGEAYg==")).startswith("500 5.5.1")  # HELO, not EHLO
    await t.cmd("EHLO client.test")
    assert (await t.cmd("HELP MAIL")).startswith("250 2.0.0 Syntax: MAIL FROM:")
    for line in (
        "QUIT now",
        "RSET now",
        "HELP",
        "HELP FOO",
        "VRFY",
        "VRFY <someone@sender.test>",
        "VRFY <<<",
        "EXPN staff",
        f"RCPT TO:<info@{INBOUND_DOMAIN}>",  # no MAIL
        "DATA",  # no MAIL
        "MAIL",
        "MAIL TO:<a@sender.test>",
        "MAIL FROM:<a@sender.test> BODY=7BITS",
        "MAIL FROM:<a@sender.test> SMTPUTF8=yes",
        "MAIL FROM:<a@sender.test> FOO=1",
        "MAIL FROM:<a@sender.test> SIZE=999999999999",
        "MAIL FROM:<a@sender.test>",
        "MAIL FROM:<b@sender.test>",  # nested
        "DATA",  # no RCPT
        "RCPT",
        f"RCPT TO:<info@{INBOUND_DOMAIN}> FOO=1",
        "RCPT TO:<someone@elsewhere.test>",  # relaying denied
        f"RCPT TO:<info@{INBOUND_DOMAIN}>",
        "DATA now",
        "STARTTLS now",
        "AUTH PLAIN AGEAYg==",  # before TLS
        "NOOP",
        "RSET",
    ):
        await t.cmd(line)
    await t.cmd("MAIL FROM:<a@sender.test>")
    await t.cmd(f"RCPT TO:<info@{INBOUND_DOMAIN}>")
    assert (await t.cmd("DATA")).startswith("354 ")
    assert (await t.send(b"Subject: x\r\n\r\nhi\r\n.\r\n", "<data>")).startswith("250 2.0.0")
    assert (await t.cmd("STARTTLS")).startswith("220 2.0.0")
    await client.starttls()
    await t.cmd("EHLO client.test")
    assert (await t.cmd("STARTTLS")).startswith("503 5.5.1")  # already TLS
    assert (await t.cmd("AUTH PLAIN AGEAYg==")).startswith("503 5.5.1")  # no AUTH on the MX
    assert (await t.cmd("QUIT")).startswith("221 2.0.0")
    await client.close()
    bad = t.without_enhanced_code()
    assert not bad, _listing(bad)


async def _user(running: Running) -> None:
    await running.inbound.create_smtp_user("app", hash_password(PASSWORD), now=0.0)


async def test_every_submission_reply_carries_an_enhanced_status_code(
    start_inbound: StartInbound,
) -> None:
    """Submission: STARTTLS required (530), AUTH without or with too many arguments, AUTH
    again after success, and a wrong password all carry RFC 3463 codes (RFC 2034)."""
    running = await start_inbound()
    await _user(running)
    client = await RawClient.connect(running.submission)
    t = _Transcript(client)
    await t.cmd("EHLO client.test")
    assert (await t.cmd("MAIL FROM:<app@sender.test>")).startswith("530 5.7.0")
    assert (await t.cmd("AUTH PLAIN " + _plain("app", PASSWORD))).startswith("530 5.7.0")
    await t.cmd("STARTTLS")
    await client.starttls()
    await t.cmd("EHLO client.test")
    assert (await t.cmd("MAIL FROM:<app@sender.test>")).startswith("530 5.7.0")  # no AUTH
    assert (await t.cmd("AUTH")).startswith("501 5.5.4")
    assert (await t.cmd("AUTH PLAIN a b")).startswith("501 5.5.4")
    assert (await t.cmd("AUTH CRAM-MD5")).startswith("504 5.5.4")
    assert (await t.cmd("AUTH PLAIN !!!")).startswith("501 5.5.2")
    assert (await t.cmd("AUTH PLAIN " + _plain("app", "wrong"))).startswith("535 5.7.8")
    assert (await t.cmd("AUTH PLAIN " + _plain("app", PASSWORD))).startswith("235 2.7.0")
    assert (await t.cmd("AUTH PLAIN " + _plain("app", PASSWORD))).startswith("503 5.5.1")
    assert (await t.cmd("MAIL FROM:<app@sender.test> REQUIRETLS=1")).startswith("501 5.5.4")
    assert (await t.cmd("QUIT")).startswith("221 2.0.0")
    await client.close()
    bad = t.without_enhanced_code()
    assert not bad, _listing(bad)


async def test_mx_without_certificate_does_not_offer_starttls_and_answers_454(
    start_inbound: StartInbound,
) -> None:
    """No certificate and self-signed generation off: the MX does not advertise STARTTLS
    and answers it 454 4.7.0, and still takes mail in plaintext (T4, T11); 587 offers
    neither STARTTLS nor AUTH, and 465 does not start."""
    running = await start_inbound(
        INBOUND__CERT_FILE="",
        INBOUND__KEY_FILE="",
        INBOUND__CHECK_AUTHENTICATION="false",
        INBOUND__SELF_SIGNED_CERTIFICATE="false",
    )
    assert running.service.certificates is None
    assert "submissions" not in running.service.ports
    assert not (running.settings.data_dir / "inbound-tls").exists()
    client = await RawClient.connect(running.mx)
    ehlo = await client.cmd("EHLO client.test")
    assert "STARTTLS" not in ehlo, ehlo
    reply = await client.cmd("STARTTLS")
    assert reply == "454 4.7.0 TLS not available due to local problem\r\n", reply
    assert (await client.cmd("MAIL FROM:<a@sender.test>")).startswith("250 2.1.0")
    assert (await client.cmd(f"RCPT TO:<info@{INBOUND_DOMAIN}>")).startswith("250 2.1.5")
    assert (await client.cmd("DATA")).startswith("354")
    await client.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
    assert (await client.reply()).startswith("250 2.0.0")
    await client.close()
    (row,) = await running.inbound.list_inbound()
    assert row.tls is None
    submission = await RawClient.connect(running.submission)
    ehlo = await submission.cmd("EHLO client.test")
    assert "STARTTLS" not in ehlo and "AUTH" not in ehlo, ehlo
    assert (await submission.cmd("STARTTLS")).startswith("454 4.7.0")
    assert (await submission.cmd("AUTH PLAIN " + _plain("app", PASSWORD))).startswith("530 5.7.0")
    await submission.close()


async def _deliver(running: Running, rcpt: str) -> str:
    client = await RawClient.connect(running.mx)
    await client.cmd("EHLO client.test")
    await client.cmd("MAIL FROM:<a@sender.test>")
    reply = await client.cmd(f"RCPT TO:<{rcpt}>")
    if reply.startswith("250"):
        assert (await client.cmd("DATA")).startswith("354")
        await client.send(b"Subject: to the postmaster\r\n\r\nhi\r\n.\r\n")
        assert (await client.reply()).startswith("250 2.0.0")
    await client.close()
    return reply


async def test_bare_postmaster_is_taken_as_postmaster_of_our_domain(
    start_inbound: StartInbound,
) -> None:
    """`RCPT TO:<postmaster>` (any case, no domain) is accepted on the MX and goes where
    postmaster@<inbound domain> goes: held by default (RFC 5321 §4.5.1)."""
    running = await start_inbound(INBOUND__CHECK_AUTHENTICATION="false")
    assert (await _deliver(running, "postmaster")).startswith("250 2.1.5")
    assert (await _deliver(running, "PostMaster")).startswith("250 2.1.5")
    assert (await _deliver(running, f"postmaster@{INBOUND_DOMAIN}")).startswith("250 2.1.5")
    rows = await running.inbound.list_inbound()
    assert len(rows) == 3
    for row in rows:
        assert row.recipients == (f"postmaster@{INBOUND_DOMAIN}",), row
        assert (row.kind, row.status) == ("route", "held"), row
        assert f"for <postmaster@{INBOUND_DOMAIN}>".encode() in row.content


async def test_bare_postmaster_follows_the_route_of_postmaster_at_our_domain(
    start_inbound: StartInbound,
) -> None:
    """With routes, bare postmaster follows postmaster@<inbound domain>'s route, not a
    catch-all (here: postmaster held, everything else refused)."""
    routes = [
        {"match": f"postmaster@{INBOUND_DOMAIN}", "action": "hold"},
        {"match": "*", "action": "reject"},
    ]
    running = await start_inbound(
        INBOUND__CHECK_AUTHENTICATION="false", INBOUND__ROUTES=json.dumps(routes)
    )
    assert (await _deliver(running, f"info@{INBOUND_DOMAIN}")).startswith("550 5.1.1")
    assert (await _deliver(running, "postmaster")).startswith("250 2.1.5")
    (row,) = await running.inbound.list_inbound()
    assert row.route == f"postmaster@{INBOUND_DOMAIN}"
    assert row.recipients == (f"postmaster@{INBOUND_DOMAIN}",)
