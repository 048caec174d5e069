"""A real Postfix (Debian) bounces a Kakitome delivery to our MX over STARTTLS."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import time

from kakitome.delivery.types import Outcome, RecipientResult
from kakitome.queue.schedule import RetrySchedule
from kakitome.smtp.replies import Reply
from kakitome.testing.postfix import PostfixInstance, make_instance_root
from tests.fixtures_db import queue_store
from tests.inbound.conftest import StartInbound, free_port

VERP = "bounce+0123456789abcdef-ghjkmnpq@rp.kakitome.test"
RECIPIENT = "nobody@rcpt.test"


async def test_postfix_bounce_marks_delivery_bounced_and_suppresses(
    start_inbound: StartInbound, postfix_bin: str
) -> None:
    """Postfix accepts our message, fails it (5.1.1) and sends its RFC 3464 bounce to the
    VERP return path at our MX over STARTTLS: the delivery becomes bounced with Postfix's
    diagnostic and the address is suppressed (permanent failure); Received says ESMTPS (T9)."""
    running = await start_inbound(INBOUND__CHECK_AUTHENTICATION="false")
    content = (
        b"From: news@sender.test\r\nTo: nobody@rcpt.test\r\nSubject: hello\r\n"
        b"Message-ID: <m1@sender.test>\r\n\r\nHello.\r\n"
    )
    message_id = await running.injector.submit_raw(
        content, sender=VERP, recipients=[RECIPIENT], source="api"
    )
    # The worker hands it to Postfix (here: a plain SMTP client), which accepts it.
    root = make_instance_root()
    port = free_port()
    transport = (
        "rcpt.test error:5.1.1 mailbox unavailable\n"
        f"rp.kakitome.test smtp:[127.0.0.1]:{running.mx}\n"
    )
    postfix = PostfixInstance(
        root,
        listen=("127.0.0.1", port),
        main_cf={
            "myhostname": "mx.postfix.test",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "transport_maps": f"hash:{root / 'etc' / 'transport'}",
            "smtp_tls_security_level": "may",
            "smtp_tls_loglevel": "1",
            "smtp_tls_CAfile": str(running.ca_file),
            "smtpd_tls_security_level": "none",
            "bounce_notice_recipient": "postmaster",
            "delay_warning_time": "0",
            "smtpd_reject_unlisted_recipient": "no",
        },
        extra_files={"transport": transport},
        postmap_files=("transport",),
    )
    await asyncio.to_thread(postfix.start)
    try:

        def hand_over() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.sendmail(VERP, [RECIPIENT], content)

        await asyncio.to_thread(hand_over)
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
        deadline = time.monotonic() + 60
        rows = []
        while time.monotonic() < deadline:
            rows = await running.inbound.list_inbound(kind="bounce")
            if rows:
                break
            await asyncio.sleep(0.2)
        assert rows, postfix.maillog_tail()
        (row,) = rows
        assert row.status == "processed", row.detail
        assert row.mail_from == ""
        assert b"with ESMTPS id" in row.content
        assert b"(using TLSv1.3 with cipher" in row.content
        receipt = await queue_store(running.store).receipt(message_id)
        (state,) = receipt.recipients
        assert state.status == "bounced"
        assert state.reply is not None and state.reply["enhanced"] == "5.1.1"
        assert "mailbox unavailable" in state.reply["text"]
        assert await running.inbound.suppressed_among([RECIPIENT]) == {RECIPIENT}
        kinds = [e["kind"] for e in await queue_store(running.store).events_for(message_id)]
        assert "bounced" in kinds and "suppressed" in kinds
        assert postfix.tls_sessions("to"), postfix.maillog_tail()
    finally:
        await asyncio.to_thread(postfix.stop)
        shutil.rmtree(root, ignore_errors=True)
