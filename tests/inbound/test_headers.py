"""Received (T9) and Authentication-Results (T35) on mail the MX takes: pass, fail, none."""

from __future__ import annotations

from kakitome.testing import LocalInternet
from tests.fixtures_db import queue_store
from tests.inbound.conftest import HOSTNAME, INBOUND_DOMAIN, RawClient, StartInbound


async def _send(port: int, sender: str, message: bytes, *, tls: bool) -> None:
    client = await RawClient.connect(port)
    await client.cmd("EHLO client.test")
    if tls:
        await client.cmd("STARTTLS")
        await client.starttls()
        await client.cmd("EHLO client.test")
    assert (await client.cmd(f"MAIL FROM:<{sender}>")).startswith("250")
    assert (await client.cmd(f"RCPT TO:<info@{INBOUND_DOMAIN}>")).startswith("250")
    assert (await client.cmd("DATA")).startswith("354")
    await client.send(message + b".\r\n")
    assert (await client.reply()).startswith("250 2.0.0")
    await client.close()


def _fields(content: bytes, name: bytes) -> list[bytes]:
    head = content.split(b"\r\n\r\n", 1)[0]
    unfolded = head.replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    return [line for line in unfolded.split(b"\r\n") if line.lower().startswith(name.lower())]


async def test_received_and_results_pass_fail_none(
    start_inbound: StartInbound, world: LocalInternet
) -> None:
    """SPF pass + DMARC pass, SPF fail + DMARC fail, and none; ESMTPS with version and
    cipher over STARTTLS, ESMTP without; forged results with our authserv-id removed."""
    good = world.unique_domain("good")
    bad = world.unique_domain("bad")
    plain = world.unique_domain("none")
    world.dns.add_txt(good, "v=spf1 ip4:127.0.0.0/8 -all")
    world.dns.add_txt(f"_dmarc.{good}", "v=DMARC1; p=reject")
    world.dns.add_txt(bad, "v=spf1 -all")
    world.dns.add_txt(f"_dmarc.{bad}", "v=DMARC1; p=quarantine")
    running = await start_inbound()
    forged = f"Authentication-Results: {HOSTNAME}; spf=pass smtp.mailfrom=x; dmarc=pass\r\n"
    other = "Authentication-Results: other.example; spf=pass\r\n"
    for domain, tls in ((good, True), (bad, False), (plain, True)):
        message = (
            f"{forged}{other}From: a@{domain}\r\nTo: info@{INBOUND_DOMAIN}\r\n"
            f"Subject: t\r\n\r\nbody\r\n"
        ).encode()
        await _send(running.mx, f"a@{domain}", message, tls=tls)
    rows = await running.inbound.list_inbound()
    assert len(rows) == 3
    by_from = {row.mail_from.split("@")[1]: row.content for row in rows}

    def results(content: bytes) -> bytes:
        ours = [f for f in _fields(content, b"Authentication-Results:") if HOSTNAME.encode() in f]
        assert len(ours) == 1, ours  # the forged one is gone, ours is added
        assert _fields(content, b"Authentication-Results: other.example")  # left alone
        return ours[0]

    ok = results(by_from[good])
    assert b"spf=pass" in ok and b"dkim=none" in ok and b"dmarc=pass" in ok
    assert b"smtp.mailfrom=a@" + good.encode() in ok
    failing = results(by_from[bad])
    assert b"spf=fail" in failing and b"dmarc=fail" in failing
    assert b"policy.dmarc=quarantine" in failing
    nothing = results(by_from[plain])
    assert b"spf=none" in nothing and b"dmarc=none" in nothing

    (received_tls,) = _fields(by_from[good], b"Received:")
    assert b"from client.test ([127.0.0.1])" in received_tls
    assert b"by " + HOSTNAME.encode() + b" (Kakitome)" in received_tls
    assert b"with ESMTPS id" in received_tls
    assert b"(using TLSv1.3 with cipher TLS_" in received_tls
    assert b"for <info@" + INBOUND_DOMAIN.encode() + b">" in received_tls
    (received_plain,) = _fields(by_from[bad], b"Received:")
    assert b"with ESMTP id" in received_plain and b"using TLS" not in received_plain
    # Our fields come first, in this order.
    assert by_from[good].startswith(b"Received: ")
    assert by_from[good].split(b"\r\n\t")[4:5]  # folded, not one long line


async def test_submission_received_says_esmtpsa(start_inbound: StartInbound) -> None:
    """Authenticated submission over TLS is ESMTPSA in the queued message (T9)."""
    from kakitome.domains.service import DomainService
    from kakitome.inbound.users import hash_password

    running = await start_inbound()
    await running.inbound.create_smtp_user("app", hash_password("a-long-password-1"), now=0.0)
    await DomainService(running.store, running.settings).add("sender.test")
    client = await RawClient.connect(running.submissions, tls=True)
    await client.cmd("EHLO client.test")
    assert (await client.cmd("AUTH PLAIN AGFwcABhLWxvbmctcGFzc3dvcmQtMQ==")).startswith("235")
    await client.cmd("MAIL FROM:<app@sender.test>")
    await client.cmd("RCPT TO:<someone@example.test>")
    await client.cmd("DATA")
    await client.send(
        b"From: app@sender.test\r\nTo: someone@example.test\r\nSubject: s\r\n\r\nx\r\n.\r\n"
    )
    reply = await client.reply()
    assert reply.startswith("250 2.0.0 OK queued as"), reply
    await client.close()
    message_id = reply.split("queued as ")[1].strip()
    (batch,) = await queue_store(running.store).claim_due("t", now=9e12, limit=5, lease_seconds=5)
    content = batch.messages[0].content
    assert message_id == batch.messages[0].message_id
    assert b"with ESMTPSA id" in content.replace(b"\r\n\t", b" ")


async def test_auth_failures_are_locked_out(start_inbound: StartInbound) -> None:
    """Repeated bad passwords get 535, then 454 4.7.0 even for the right one (lockout)."""
    from kakitome.inbound.users import hash_password

    running = await start_inbound(INBOUND__MAX_AUTH_FAILURES="3")
    await running.inbound.create_smtp_user("app", hash_password("a-long-password-1"), now=0.0)
    client = await RawClient.connect(running.submissions, tls=True)
    await client.cmd("EHLO client.test")
    bad = "AUTH PLAIN AGFwcAB3cm9uZw=="
    assert (await client.cmd(bad)).startswith("535 5.7.8")
    assert (await client.cmd(bad)).startswith("535 5.7.8")
    assert (await client.cmd(bad)).startswith("454 4.7.0")
    good = "AUTH PLAIN AGFwcABhLWxvbmctcGFzc3dvcmQtMQ=="
    assert (await client.cmd(good)).startswith("454 4.7.0")
    await client.close()


async def test_authentication_is_bounded_and_spf_cached(
    start_inbound: StartInbound, world: LocalInternet
) -> None:
    """SPF lookups that never answer cost at most the budget: the message is accepted with
    temperror. An SPF outcome is reused for the same client, MAIL FROM and HELO."""
    import time

    slow = world.unique_domain("slow")
    world.dns.set_hang(slow)
    cached = world.unique_domain("cached")
    world.dns.add_txt(cached, "v=spf1 ip4:127.0.0.0/8 -all")
    running = await start_inbound()
    running.service.mx_handler.auth_budget = 1.0
    message = f"From: a@{slow}\r\nTo: info@{INBOUND_DOMAIN}\r\nSubject: t\r\n\r\nbody\r\n"
    started = time.monotonic()
    await _send(running.mx, f"a@{slow}", message.encode(), tls=False)
    assert time.monotonic() - started < 5
    (row,) = await running.inbound.list_inbound()
    (ours,) = [f for f in _fields(row.content, b"Authentication-Results:") if b"spf=" in f]
    assert b"spf=temperror" in ours and b"dmarc=temperror" in ours

    for n in range(2):
        text = f"From: a@{cached}\r\nTo: info@{INBOUND_DOMAIN}\r\nSubject: {n}\r\n\r\nbody\r\n"
        await _send(running.mx, f"a@{cached}", text.encode(), tls=False)
        world.dns.remove(cached)  # the second message is judged from the cache
    rows = [r for r in await running.inbound.list_inbound() if cached in r.mail_from]
    assert len(rows) == 2
    for r in rows:
        (field,) = [f for f in _fields(r.content, b"Authentication-Results:") if b"spf=" in f]
        assert b"spf=pass" in field
