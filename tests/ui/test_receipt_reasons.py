"""Tests: the message page shows why a delivery went in plaintext (the receipt's
``plaintext_reason``, T43) and a suspected STARTTLS stripping, in English and Japanese."""

from __future__ import annotations

import time

from kakitome.queue.store import QueueStore
from kakitome.queue.types import NewMessage, NewRecipient
from kakitome.store.database import Database
from tests.receipts import PLAINTEXT_REASON, deliver_due_in_plaintext

from .conftest import Login, csrf_of


async def test_message_page_says_why_plaintext(user_client: Login, store: Database) -> None:
    message_id = await QueueStore(store).inject(
        NewMessage(
            source="api",
            sender="news@sender.test",
            header_from="news@sender.test",
            subject="plain",
            content=b"Subject: plain\r\n\r\nbody\r\n",
            recipients=(NewRecipient("a@example.net", "example.net"),),
        ),
        now=time.time(),
        lifetime=3600,
    )
    stripping = "mx.example.net offered STARTTLS 60 s ago; now it does not offer STARTTLS"
    await deliver_due_in_plaintext(store, stripping=stripping)
    viewer = await user_client("viewer", "viewer")
    page = (await viewer.get(f"/ui/messages/{message_id}")).text
    assert "Why plaintext was allowed" in page
    assert 'class="tls-plaintext-reason">' + PLAINTEXT_REASON in page
    assert "Possible STARTTLS stripping" in page and stripping in page

    token = csrf_of(page)
    await viewer.post("/ui/language", data={"csrf_token": token, "lang": "ja"})
    page = (await viewer.get(f"/ui/messages/{message_id}")).text
    assert "平文での送信を許可した理由" in page and PLAINTEXT_REASON in page
    assert "STARTTLS ストリッピングの疑い" in page
