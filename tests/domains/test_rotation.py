"""`domain rotate-dkim`: new selectors sign only once DNS shows them; old keys retire after
the grace period."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from kakitome.domains.service import DomainService
from kakitome.domains.signing import DomainSigning
from kakitome.errors import InputError
from kakitome.store.database import Database
from kakitome.store.schema import events
from kakitome.store.schema_domains import dkim_keys
from tests.domains.conftest import Env


class Clock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0  # 2026-09

    def __call__(self) -> float:
        return self.now


async def test_rotation_switches_only_when_dns_shows_the_new_keys(
    domain_store: Database, domain_env: Env
) -> None:
    """Pending keys do not sign until verify sees them published; then they sign, the old
    ones retire after the grace period and their private keys are wiped."""
    clock = Clock()
    service = DomainService(domain_store, domain_env.settings, clock=clock)
    signing = await DomainSigning.load(domain_store, domain_env.settings)
    view = await service.add(domain_env.domain)
    old = set(view.to_dict()["signing_selectors"])
    assert old == {"k202609r", "k202609e"}
    domain_env.publish((await service.records(domain_env.domain)).to_dict())

    rotated = (await service.rotate_dkim(domain_env.domain)).to_dict()
    pending = {k["selector"] for k in rotated["keys"] if k["state"] == "pending"}
    assert pending == {"k202609r2", "k202609e2"}
    with pytest.raises(InputError, match="already waiting"):
        await service.rotate_dkim(domain_env.domain)

    await service.verify(domain_env.domain)  # new records not published yet
    await signing.refresh(domain_store)
    assert set(signing.selectors(domain_env.domain)) == old

    printed = (await service.records(domain_env.domain)).to_dict()
    domain_env.publish(printed, skip=lambda r: r.get("selector") not in pending, ptr=False)
    result = await service.verify(domain_env.domain)
    assert result.state == "verified"
    await signing.refresh(domain_store)
    assert set(signing.selectors(domain_env.domain)) == pending
    states = {
        k["selector"]: k["state"] for k in (await service.show(domain_env.domain)).to_dict()["keys"]
    }
    assert states == {**dict.fromkeys(old, "retiring"), **dict.fromkeys(pending, "active")}
    # Retiring keys stay in `domain dns` until they are retired.
    names = {r.selector for r in (await service.records(domain_env.domain)).records}
    assert old | pending <= names

    clock.now += domain_env.settings.domains.rotation_grace + 1
    await service.verify(domain_env.domain)
    states = {
        k["selector"]: k["state"] for k in (await service.show(domain_env.domain)).to_dict()["keys"]
    }
    assert states == {**dict.fromkeys(old, "retired"), **dict.fromkeys(pending, "active")}
    async with domain_store.engine.connect() as conn:
        wiped = (await conn.execute(
            select(dkim_keys.c.private_key).where(dkim_keys.c.selector.in_(old))
        )).scalars().all()  # fmt: skip
        kinds = (await conn.execute(select(events.c.kind))).scalars().all()
    assert wiped == ["", ""]
    assert "dkim_rotated" in kinds and "dkim_retired" in kinds
    names = {r.selector for r in (await service.records(domain_env.domain)).records}
    assert not old & names
