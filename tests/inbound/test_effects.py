"""What mail received on the MX does to the database, on SQLite and on PostgreSQL: bounces
(permanent at once, temporary after the threshold), ARF complaints, TLS-RPT reports, held
mail; and the CLI over what was stored (``inbound held|show|release|delete``,
``tlsrpt list|show``, ``suppression``)."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from kakitome.cli.main import app
from kakitome.delivery.types import Outcome, RecipientResult
from kakitome.queue.schedule import RetrySchedule
from kakitome.smtp.replies import Reply
from tests.fixtures_db import queue_store
from tests.inbound.conftest import (
    INBOUND_DOMAIN,
    RETURN_PATH_DOMAIN,
    RawClient,
    Running,
    StartInbound,
)
from tests.inbound.test_bounces import ARF, TLSRPT_DOC, crlf, tlsrpt_mail

VERP = f"bounce+0123456789abcdef-ghjkmnpq@{RETURN_PATH_DOMAIN}"


async def _send_mx(port: int, sender: str, recipient: str, message: bytes) -> str:
    """One message to the MX over STARTTLS; the final reply."""
    client = await RawClient.connect(port)
    await client.cmd("EHLO reporter.test")
    assert (await client.cmd("STARTTLS")).startswith("220")
    await client.starttls()
    await client.cmd("EHLO reporter.test")
    assert (await client.cmd(f"MAIL FROM:<{sender}>")).startswith("250")
    rcpt = await client.cmd(f"RCPT TO:<{recipient}>")
    assert rcpt.startswith("250"), rcpt
    assert (await client.cmd("DATA")).startswith("354")
    await client.send(message + b".\r\n")
    reply = await client.reply()
    await client.close()
    return reply


async def _delivered(running: Running, sender: str, recipient: str) -> str:
    """A message of ours from ``sender`` to ``recipient``, delivered (the remote said 250)."""
    content = (
        f"From: news@sender.test\r\nTo: {recipient}\r\nSubject: hello\r\n"
        "Message-ID: <m1@sender.test>\r\n\r\nHello.\r\n"
    ).encode()
    message_id = await running.injector.submit_raw(
        content, sender=sender, recipients=[recipient], source="api"
    )
    claimed = await queue_store(running.store).claim_due(
        "t", now=time.time(), limit=10, lease_seconds=60
    )
    (delivery,) = claimed[0].messages[0].recipients
    await queue_store(running.store).record_results(
        "t",
        [RecipientResult(delivery.delivery_id, Outcome.DELIVERED, Reply(250, "2.0.0", "ok"))],
        now=time.time(),
        schedule=RetrySchedule.from_settings(running.settings.queue),
    )
    return message_id


def _dsn(recipient: str, status: str, return_path: str) -> bytes:
    action = "failed"
    code = "550" if status.startswith("5") else "452"
    return crlf(f"""\
From: MAILER-DAEMON@mx.remote.test (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {return_path}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain; charset=us-ascii

Your message could not be delivered.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.remote.test

Final-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mail.remote.test
Diagnostic-Code: smtp; {code} {status} mailbox says no

--B1--
""")


async def test_permanent_bounce_marks_bounced_and_suppresses(
    database_url: str, start_inbound: StartInbound
) -> None:
    """A 5.x.x DSN to the VERP return path: delivery bounced with the remote diagnostic,
    address suppressed at once, events recorded."""
    running = await start_inbound(database_url, INBOUND__CHECK_AUTHENTICATION="false")
    message_id = await _delivered(running, VERP, "gone@remote.test")
    reply = await _send_mx(running.mx, "", VERP, _dsn("gone@remote.test", "5.1.1", VERP))
    assert reply.startswith("250 2.0.0"), reply
    (row,) = await running.inbound.list_inbound(kind="bounce")
    assert row.status == "processed", row.detail
    (state,) = (await queue_store(running.store).receipt(message_id)).recipients
    assert state.status == "bounced"
    assert state.reply is not None and state.reply["enhanced"] == "5.1.1"
    assert await running.inbound.suppressed_among(["Gone@remote.test"]) == {"gone@remote.test"}
    kinds = [e["kind"] for e in await queue_store(running.store).events_for(message_id)]
    assert "bounced" in kinds and "suppressed" in kinds
    assert await running.inbound.bounce_count("gone@remote.test") == (1, 0)


async def test_temporary_bounces_suppress_at_the_threshold(
    database_url: str, start_inbound: StartInbound
) -> None:
    """4.x.x failures are counted; the address is suppressed at the third (the default)."""
    running = await start_inbound(database_url, INBOUND__CHECK_AUTHENTICATION="false")
    for n in range(3):
        verp = f"bounce+{n:016d}-ghjkmnpq@{RETURN_PATH_DOMAIN}"
        await _delivered(running, verp, "full@remote.test")
        assert await running.inbound.suppressed_among(["full@remote.test"]) == set()
        reply = await _send_mx(running.mx, "", verp, _dsn("full@remote.test", "4.2.2", verp))
        assert reply.startswith("250 2.0.0"), reply
    assert await running.inbound.bounce_count("full@remote.test") == (0, 3)
    (record,) = await running.inbound.list_suppressions()
    assert record.address == "full@remote.test" and record.reason == "bounce"


async def test_bounce_for_no_message_of_ours_changes_nothing(
    database_url: str, start_inbound: StartInbound
) -> None:
    """A DSN to a return-path address no message went out with is kept as unmatched."""
    running = await start_inbound(database_url, INBOUND__CHECK_AUTHENTICATION="false")
    other = f"bounce+ffffffffffffffff-zzzzzzzz@{RETURN_PATH_DOMAIN}"
    reply = await _send_mx(running.mx, "", other, _dsn("x@remote.test", "5.1.1", other))
    assert reply.startswith("250 2.0.0")
    (row,) = await running.inbound.list_inbound(kind="bounce")
    assert row.status == "unmatched"
    assert await running.inbound.list_suppressions() == []


async def test_arf_complaint_suppresses(database_url: str, start_inbound: StartInbound) -> None:
    """An ARF abuse report about a message we sent suppresses its recipient."""
    running = await start_inbound(database_url, INBOUND__CHECK_AUTHENTICATION="false")
    verp = "bounce+abc@bounce.sender.test"
    message_id = await _delivered(running, verp, "angry@example.net")
    reply = await _send_mx(running.mx, "feedback@fbl.example.net", f"fbl@{RETURN_PATH_DOMAIN}", ARF)
    assert reply.startswith("250 2.0.0"), reply
    (row,) = await running.inbound.list_inbound(kind="complaint")
    assert row.status == "processed", row.detail
    (record,) = await running.inbound.list_suppressions()
    assert record.address == "angry@example.net" and record.reason == "complaint"
    kinds = [e["kind"] for e in await queue_store(running.store).events_for(message_id)]
    assert "complained" in kinds and "suppressed" in kinds


def _cli(runner: CliRunner, config: Path, *args: str, code: int = 0) -> Any:
    result = runner.invoke(app, [*args, "--json", "--config", str(config)])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return json.loads(result.stdout)


async def test_tlsrpt_and_held_mail_through_the_cli(
    database_url: str, start_inbound: StartInbound, tmp_path: Path
) -> None:
    """A TLS-RPT report and a held message arrive on the MX; the CLI lists and shows them,
    releases the held message to a forward route and deletes another."""
    running = await start_inbound(database_url, INBOUND__CHECK_AUTHENTICATION="false")
    report = tlsrpt_mail(gzip.compress(json.dumps(TLSRPT_DOC).encode()))
    assert (
        await _send_mx(
            running.mx, "reporter@company-x.example", f"tls@{RETURN_PATH_DOMAIN}", report
        )
    ).startswith("250")
    for n in range(2):
        held = f"From: a@b.test\r\nTo: info@{INBOUND_DOMAIN}\r\nSubject: held {n}\r\n\r\nhi\r\n"
        reply = await _send_mx(running.mx, "a@b.test", f"info@{INBOUND_DOMAIN}", held.encode())
        assert reply.startswith("250")

    config = tmp_path / "cli.toml"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n'
        "[[inbound.routes]]\n"
        f'match = "@{INBOUND_DOMAIN}"\naction = "forward"\nurl = "http://127.0.0.1:9/hook"\n'
    )
    runner = CliRunner()

    def cli(*args: str, code: int = 0) -> Any:
        return _cli(runner, config, *args, code=code)

    def run(*args: str, code: int = 0) -> Any:
        return asyncio.to_thread(cli, *args, code=code)

    (listed,) = (await run("tlsrpt", "list"))["reports"]
    assert listed["organization"] == "Company-X" and listed["failed"] == 303
    shown = await run("tlsrpt", "show", str(listed["id"]))
    assert shown["report"]["report-id"] == TLSRPT_DOC["report-id"]
    assert shown["period_start"] == "2016-04-01T00:00:00Z"
    await run("tlsrpt", "show", "999999", code=1)

    held = (await run("inbound", "held"))["held"]
    assert [h["recipients"] for h in held] == [[f"info@{INBOUND_DOMAIN}"]] * 2
    newest, oldest = held
    shown = await run("inbound", "show", newest["id"])
    assert shown["headers"]["Subject"] == "held 1"
    assert shown["tls"]["version"].startswith("TLSv1.")
    raw = await asyncio.to_thread(
        runner.invoke, app, ["inbound", "show", newest["id"], "--raw", "--config", str(config)]
    )
    assert raw.exit_code == 0 and raw.stdout.startswith("Received: from reporter.test")

    released = await run("inbound", "release", oldest["id"])
    assert released == {"id": oldest["id"], "released": True, "route": f"@{INBOUND_DOMAIN}"}
    row = await running.inbound.get_inbound(oldest["id"])
    assert row is not None and row.status == "forward" and row.next_attempt_at is not None
    await run("inbound", "release", oldest["id"], code=1)  # not held any more

    assert (await run("inbound", "delete", newest["id"])) == {
        "deleted": [newest["id"]],
        "not_found": [],
    }
    assert await running.inbound.get_inbound(newest["id"]) is None
    assert (await run("inbound", "delete", newest["id"], code=1))["not_found"] == [newest["id"]]
    assert (await run("inbound", "held"))["held"] == []

    # Suppression CLI on the same database.
    await run("suppression", "add", "Someone@Example.NET", "--detail", "asked")
    (entry,) = (await run("suppression", "list"))["suppressions"]
    assert entry["address"] == "someone@example.net" and entry["reason"] == "manual"
    assert (await run("suppression", "remove", "someone@example.net"))["removed"] is True
