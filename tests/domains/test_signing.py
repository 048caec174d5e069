"""Signing on the injection path (T32, T33): dkimpy verifies both signatures with the keys
from the printed records; VERP return paths; unconfigured From domains are refused."""

from __future__ import annotations

import dkim
import pytest
from sqlalchemy import func, select

from kakitome.auth.dkim_verify import parse_tag_list
from kakitome.config import load_settings
from kakitome.domains.service import DomainService
from kakitome.domains.signing import DomainSigning, UnconfiguredDomainError
from kakitome.domains.verp import parse_return_path
from kakitome.errors import InputError
from kakitome.injection import Injector
from kakitome.store.database import Database
from kakitome.store.schema import messages
from tests.domains.conftest import Env
from tests.fixtures_db import queue_store


async def _injector(store: Database, env: Env, **extra: str) -> tuple[Injector, DomainSigning]:
    settings = load_settings(environ={**env.world.env(), **env.env, **extra})
    signing = await DomainSigning.load(store, settings)
    injector = Injector(
        queue_store(store), settings, signer=signing.sign, return_path=signing.return_path
    )
    return injector, signing


def _dnsfunc(records: dict[str, str]):  # type: ignore[no-untyped-def]
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode().rstrip("."))
        return value.encode() if value is not None else None

    return lookup


async def test_injected_mail_verifies_with_dkimpy(
    service: DomainService, domain_env: Env, domain_store: Database
) -> None:
    """Both signatures (rsa-sha256, ed25519-sha256) of a Japanese message made by the
    injector verify with dkimpy using the public keys of `domain dns`."""
    await service.add(domain_env.domain)
    printed = (await service.records(domain_env.domain)).to_dict()
    keys = {r["name"]: r["value"] for r in printed["records"] if r["purpose"] == "dkim"}
    injector, _ = await _injector(domain_store, domain_env)
    message = injector.prepare_fields(
        from_=f"書留 <news@{domain_env.domain}>",
        to=["a@example.com"],
        subject="配信のお知らせ — 秋のキャンペーン",
        text="本文です。\n.先頭のドット\n",
        headers={"List-Unsubscribe": "<https://example.com/u/1>",
                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    )  # fmt: skip
    content = message.content
    assert content.count(b"DKIM-Signature:") == 2
    algorithms = []
    for index in range(2):
        assert dkim.DKIM(content).verify(idx=index, dnsfunc=_dnsfunc(keys)), index
        field = content.split(b"DKIM-Signature:")[index + 1].split(b"\r\n\r\n")[0]
        tags = parse_tag_list(field.decode().split("\r\n", 0)[0])
        algorithms.append(tags["a"])
        assert "l" not in tags and tags["c"] == "relaxed/relaxed"
        assert "list-unsubscribe" in tags["h"].lower()
    assert sorted(algorithms) == ["ed25519-sha256", "rsa-sha256"]


async def test_envelope_sender_is_a_verp_return_path(
    service: DomainService, domain_env: Env, domain_store: Database
) -> None:
    """Signed mail gets bounce+<id>-<mac>@bounce.<domain>; it reads back, a forged one does not,
    and the stored message is found by it."""
    await service.add(domain_env.domain)
    injector, signing = await _injector(domain_store, domain_env)
    message_id = await injector.submit_fields(
        from_=f"news@{domain_env.domain}", to=["a@example.com"], subject="s", text="t"
    )
    async with domain_store.engine.connect() as conn:
        sender = (
            await conn.execute(select(messages.c.sender).where(messages.c.id == message_id))
        ).scalar_one()
    assert sender.startswith("bounce+") and sender.endswith(f"@bounce.{domain_env.domain}")
    key = signing._keybox.verp_key
    parsed = parse_return_path(key, sender.upper())
    assert parsed is not None and parsed.address == sender
    token, mac = parsed.token.split("-")
    forged = f"bounce+{token}-{'0' * len(mac)}@bounce.{domain_env.domain}"
    assert parse_return_path(key, forged) is None
    assert parse_return_path(b"another key" * 3, sender) is None
    async with domain_store.engine.connect() as conn:
        found = await conn.execute(select(messages.c.id).where(messages.c.sender == sender))
        assert found.scalar_one() == message_id


async def test_unconfigured_from_domain_is_refused(domain_env: Env, domain_store: Database) -> None:
    """Mail From a domain that is not configured is refused (InputError) and nothing is
    stored; with allow_unconfigured_from it goes out unsigned with its own sender."""
    injector, _ = await _injector(domain_store, domain_env)
    with pytest.raises(UnconfiguredDomainError, match="not a configured sending domain") as info:
        await injector.submit_fields(from_="a@unconfigured.test", to=["b@example.com"], text="x")
    assert isinstance(info.value, InputError)
    async with domain_store.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(messages))).scalar_one() == 0

    allowing, _ = await _injector(
        domain_store, domain_env, KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM="true"
    )
    message = allowing.prepare_fields(from_="a@unconfigured.test", to=["b@example.com"], text="x")
    assert b"DKIM-Signature" not in message.content and message.sender == "a@unconfigured.test"


async def test_removed_domain_is_refused_after_refresh(
    service: DomainService, domain_env: Env, domain_store: Database
) -> None:
    """After `domain remove` and a key refresh, its mail is refused."""
    await service.add(domain_env.domain)
    injector, signing = await _injector(domain_store, domain_env)
    injector.prepare_fields(from_=f"a@{domain_env.domain}", to=["b@example.com"], text="x")
    await service.remove(domain_env.domain)
    await signing.refresh(domain_store)
    with pytest.raises(UnconfiguredDomainError):
        injector.prepare_fields(from_=f"a@{domain_env.domain}", to=["b@example.com"], text="x")
