"""The injection path: validate everything, sign last, store once."""

from __future__ import annotations

import time

import pytest

from kakitome.config import Settings
from kakitome.errors import AddressError, MessageError
from kakitome.injection import Injector
from kakitome.message import MessageTooLarge
from kakitome.store.database import Database
from tests.fixtures_db import queue_store

SETTINGS = Settings.model_validate({"delivery": {"max_message_size": 4096}})


async def test_signer_called_last_and_stored(store: Database) -> None:
    """The signer sees the final content and the From domain; its output is what is stored."""
    seen: list[tuple[bytes, str]] = []

    def signer(content: bytes, domain: str) -> bytes:
        seen.append((content, domain))
        return b"DKIM-Signature: v=1; d=" + domain.encode() + b"\r\n" + content

    injector = Injector(queue_store(store), SETTINGS, clock=lambda: 1_780_000_000.0, signer=signer)
    message_id = await injector.submit_fields(
        from_="info@例え.jp", to=["a@example.com"], subject="件名", text="本文"
    )
    assert seen and seen[0][1] == "xn--r8jz45g.jp"
    batches = await queue_store(store).claim_due(
        "t", now=1_780_000_001.0, limit=10, lease_seconds=60
    )
    stored = batches[0].messages[0]
    assert stored.message_id == message_id
    assert stored.content.startswith(b"DKIM-Signature: v=1; d=xn--r8jz45g.jp\r\n")
    assert stored.content.endswith(seen[0][0])
    receipt = await queue_store(store).receipt(message_id)
    assert receipt.created_at == 1_780_000_000.0
    assert receipt.header_from == "info@xn--r8jz45g.jp"


async def test_signer_growing_past_limit_refused(store: Database) -> None:
    """A signature that pushes the message over the size limit is refused, nothing stored."""
    injector = Injector(
        queue_store(store), SETTINGS, signer=lambda content, _d: b"X" * 5000 + content
    )
    with pytest.raises(MessageTooLarge):
        await injector.submit_fields(from_="i@example.jp", to=["a@example.com"], text="x")
    assert await queue_store(store).list_deliveries() == []


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"to": ["ok@example.com", "not-an-address"]}, AddressError),
        ({"to": ["ok@example.com"], "subject": "a\nb"}, MessageError),
        ({"to": []}, MessageError),
    ],
)
async def test_nothing_stored_on_refusal(
    store: Database, fields: dict[str, object], error: type[Exception]
) -> None:
    """Any refusal happens before the store is touched: no message, no delivery."""
    injector = Injector(queue_store(store), SETTINGS)
    with pytest.raises(error):
        await injector.submit_fields(from_="i@example.jp", text="x", **fields)  # type: ignore[arg-type]
    assert await queue_store(store).list_deliveries() == []
    assert sum((await queue_store(store).status_counts()).values()) == 0


async def test_raw_with_dsn_parameters(store: Database) -> None:
    """Raw submission keeps NOTIFY/ORCPT per recipient, ENVID and RET, and the null sender."""
    injector = Injector(queue_store(store), SETTINGS)
    message_id = await injector.submit_raw(
        b"From: i@example.jp\r\nTo: x@example.com\r\n\r\nbody\r\n",
        sender="",
        recipients=["A@Example.com", "b@example.com"],
        notify={"A@Example.com": "FAILURE,DELAY"},
        orcpt={"A@Example.com": "rfc822;A@Example.com"},
        envid="E1",
        ret="hdrs",
        source="smtp",
    )
    batches = await queue_store(store).claim_due(
        "t", now=time.time() + 1, limit=10, lease_seconds=60
    )
    message = batches[0].messages[0]
    assert message.message_id == message_id
    assert message.sender == "" and message.envid == "E1" and message.ret == "HDRS"
    by_address = {r.address: r for r in message.recipients}
    assert by_address["A@example.com"].notify == "FAILURE,DELAY"
    assert by_address["A@example.com"].orcpt == "rfc822;A@Example.com"
    assert by_address["b@example.com"].notify is None
