"""A double opt-in confirmation queued from the admin UI is DKIM-signed and has a VERP
return path, as the API's is: the UI uses the process's one injector (``services``).

The first version of the UI's lists area built its own injector, without the signer and
the return path, so these mails went out unsigned with the list's From as the envelope
sender. Checked here end to end over HTTP with real signing (``open_services``), with
dkimpy verifying both signatures against the TXT records ``domain dns`` would print.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import dkim
import httpx
from sqlalchemy import select

from kakitome.config import Settings
from kakitome.domains.verp import LOCAL_PREFIX, parse_return_path
from kakitome.services import open_services
from kakitome.store.database import Database
from kakitome.store.schema import deliveries, messages
from kakitome.web import create_app

from .conftest import PASSWORD, csrf_of, login_as

DOMAIN = "signed-ui.example.jp"
SUBSCRIBER = "hanako@example.net"


def _dnsfunc(records: dict[str, str]) -> Callable[..., bytes | None]:
    """dkimpy's DNS: the published TXT value of ``name``, or nothing."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode().rstrip("."))
        return value.encode() if value is not None else None

    return lookup


async def test_ui_confirmation_mail_is_signed_with_a_verp_return_path(
    store: Database, tmp_path: Path
) -> None:
    settings = Settings.model_validate(
        {
            "paths": {"data_dir": str(tmp_path)},
            "domains": {"key_passphrase": "a passphrase for the test's DKIM keys"},
        }
    )
    services = await open_services(settings, store=store)
    await services.domains.add(DOMAIN)
    assert services.signing is not None  # open_services always loads the keys
    await services.signing.refresh(store)
    printed = (await services.domains.records(DOMAIN)).to_dict()
    keys = {r["name"]: r["value"] for r in printed["records"] if r["purpose"] == "dkim"}
    assert len(keys) == 2  # RSA and Ed25519

    await services.web_store.create_user("admin", PASSWORD, "admin", now=time.time())
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://kakitome.test") as ui:
        assert (await login_as(ui, "admin")).status_code == 303
        page = await ui.get("/ui/lists")
        created = await ui.post(
            "/ui/lists",
            data={
                "csrf_token": csrf_of(page.text),
                "name": "signed",
                "title": "署名つきニュース",
                "opt_in": "double",
                "from_name": "Shop",
                "from_address": f"news@{DOMAIN}",
                "sender_organization": "株式会社テスト",
                "sender_postal_address": "東京都千代田区1-1",
                "time_zone": "Asia/Tokyo",
                "encoding": "utf-8",
            },
        )
        assert created.status_code == 303, created.text
        list_url = created.headers["location"].split("?")[0]
        detail = await ui.get(list_url)
        added = await ui.post(
            f"{list_url}/subscribers",
            data={"csrf_token": csrf_of(detail.text), "address": SUBSCRIBER, "name": "花子"},
        )
        assert added.status_code == 303, added.text
        assert added.headers["location"].endswith("?done=added")

    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(messages.c.sender, messages.c.content)
                .join(deliveries, deliveries.c.message_id == messages.c.id)
                .where(deliveries.c.recipient == SUBSCRIBER)
            )
        ).all()
    assert len(rows) == 1, rows  # the confirmation mail, queued once
    sender, content = rows[0].sender, bytes(rows[0].content)
    mail = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    body = mail.get_body(("plain",))
    assert body is not None and "/confirm/" in body.get_content()  # the confirmation mail
    assert re.search(rb"^From: .*<news@" + re.escape(DOMAIN.encode()) + rb">", content, re.M)

    assert content.count(b"DKIM-Signature:") == 2
    assert dkim.verify(content, dnsfunc=_dnsfunc(keys))
    for index in range(2):
        assert dkim.DKIM(content).verify(idx=index, dnsfunc=_dnsfunc(keys)), index

    return_path_domain = f"{settings.domains.return_path_label}.{DOMAIN}"
    assert sender.startswith(f"{LOCAL_PREFIX}+"), sender
    assert sender.endswith(f"@{return_path_domain}"), sender
    verp_key = services.signing._keybox.verp_key  # ours: the MAC checks
    parsed = parse_return_path(verp_key, sender)
    assert parsed is not None and parsed.address == sender
    await services.close()
