"""Blank-mail sign-up (空メール) and the List-Unsubscribe mailto, end to end: SMTP to the
running MX listener (``InboundService`` on loopback), then the list as the service sees it.

The list's mail domain is not one of ``inbound.domains``: list addresses are taken because
they are a list's, and any other address at that domain is still refused (no relay)."""

from __future__ import annotations

import asyncio
import smtplib

from kakitome.lists import ListService, NewList
from tests.fixtures_db import queue_store
from tests.inbound.conftest import Running, StartInbound

LIST_DOMAIN = "lists.kakitome.test"


def _send(port: int, sender: str, recipient: str, body: str = "") -> tuple[int, str]:
    """One message over plain SMTP; (code, text) of the reply to DATA (or to RCPT when it
    was refused)."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=20) as client:
        client.ehlo()
        client.mail(sender)
        code, text = client.rcpt(recipient)
        if code >= 300:
            return code, text.decode()
        data = (
            f"From: {sender or 'MAILER-DAEMON@client.test'}\r\nTo: {recipient}\r\n"
            f"Subject: \r\n\r\n{body}"
        )
        code, text = client.data(data.encode())
        return code, text.decode()


async def send(port: int, sender: str, recipient: str, body: str = "") -> tuple[int, str]:
    # smtplib blocks: run it off the loop that serves the MX.
    return await asyncio.to_thread(_send, port, sender, recipient, body)


def _service(running: Running) -> ListService:
    return ListService(running.store, running.settings, injector=running.injector)


async def _list(service: ListService, name: str, opt_in: str) -> int:
    created = await service.create_list(
        NewList(
            name=name,
            title="空メール通信",
            opt_in=opt_in,  # type: ignore[arg-type]
            from_address=f"{name}@{LIST_DOMAIN}",
            sender_organization="書留商店株式会社",
            mail_domain=LIST_DOMAIN,
        )
    )
    return created.id


async def test_blank_mail_single_opt_in_subscribes(start_inbound: StartInbound) -> None:
    """A blank mail to news@ subscribes the envelope sender at once (single opt-in), with
    the opt-in record; the message is kept as kind ``list``."""
    running = await start_inbound()
    service = _service(running)
    list_id = await _list(service, "news", "single")

    code, text = await send(running.mx, "taro@example.jp", f"news@{LIST_DOMAIN}")
    assert code == 250, text

    member = await service.membership(list_id, "taro@example.jp")
    assert member.status == "subscribed"
    assert member.optin_method == "blank_mail" and member.optin_source == "taro@example.jp"
    assert member.optin_ip == "127.0.0.1"
    kept = await running.inbound.list_inbound(kind="list")
    assert len(kept) == 1 and kept[0].status == "processed"
    assert kept[0].detail is not None
    assert kept[0].detail["lists"][0]["action"] == "subscribed"

    # Again: nothing changes, no duplicate.
    code, _ = await send(running.mx, "taro@example.jp", f"news+subscribe@{LIST_DOMAIN}")
    assert code == 250
    assert (await service.count_members(list_id)) == {"subscribed": 1}


async def test_blank_mail_double_opt_in_queues_confirmation(
    start_inbound: StartInbound,
) -> None:
    """On a double opt-in list the sender stays unconfirmed and a confirmation mail with
    the confirmation link is queued to it."""
    running = await start_inbound()
    service = _service(running)
    list_id = await _list(service, "letter", "double")

    code, text = await send(running.mx, "hanako@example.jp", f"letter@{LIST_DOMAIN}")
    assert code == 250, text

    member = await service.membership(list_id, "hanako@example.jp")
    assert member.status == "unconfirmed"
    queued = await queue_store(running.store).list_deliveries()
    assert [d.recipient for d in queued] == ["hanako@example.jp"]
    receipt = await queue_store(running.store).receipt(queued[0].message_id)
    assert receipt.subject.startswith("【空メール通信】登録確認")


async def test_mailto_unsubscribe_and_refusals(start_inbound: StartInbound) -> None:
    """A mail to the List-Unsubscribe mailto (+u-<token>) unsubscribes, whoever sends it;
    a forged token changes nothing; other addresses at the list domain are refused at
    RCPT; a null sender cannot sign up."""
    running = await start_inbound()
    service = _service(running)
    list_id = await _list(service, "news", "single")
    code, _ = await send(running.mx, "jiro@example.jp", f"news@{LIST_DOMAIN}")
    assert code == 250
    member = await service.membership(list_id, "jiro@example.jp")
    assert member.status == "subscribed"

    mailto = service.unsubscribe_mailto(await service.get_list(list_id), member.subscriber.id)
    assert mailto is not None
    address = mailto.removeprefix("mailto:").split("?")[0]
    assert address.startswith("news+u-")

    # A forged token: accepted at RCPT (it looks like the list's), refused inside.
    forged = address[: -len(LIST_DOMAIN) - 3] + "zz0@" + LIST_DOMAIN
    code, _ = await send(running.mx, "jiro@example.jp", forged)
    assert code == 250
    assert (await service.membership(list_id, "jiro@example.jp")).status == "subscribed"

    code, text = await send(running.mx, "someone-else@example.net", address, "unsubscribe")
    assert code == 250, text
    member = await service.membership(list_id, "jiro@example.jp")
    assert member.status == "unsubscribed"
    history = await service.history("jiro@example.jp")
    assert history[0]["kind"] == "unsubscribed" and "mailto" in history[0]["detail"]

    # Not a list address: relaying denied, as before.
    code, text = await send(running.mx, "jiro@example.jp", f"postmaster@{LIST_DOMAIN}")
    assert code == 550, text
    # A null sender cannot subscribe anyone.
    code, _ = await send(running.mx, "", f"news@{LIST_DOMAIN}")
    assert code == 250
    assert (await service.count_members(list_id)) == {"unsubscribed": 1}


async def test_unsubscribe_by_mail_from_the_member(start_inbound: StartInbound) -> None:
    """news+unsubscribe@ unsubscribes the envelope sender."""
    running = await start_inbound()
    service = _service(running)
    list_id = await _list(service, "news", "single")
    assert (await send(running.mx, "k@example.jp", f"news@{LIST_DOMAIN}"))[0] == 250
    assert (await send(running.mx, "k@example.jp", f"news+unsubscribe@{LIST_DOMAIN}"))[0] == 250
    assert (await service.membership(list_id, "k@example.jp")).status == "unsubscribed"
