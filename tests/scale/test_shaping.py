"""Shaping per destination site: the site rule, slow start, back-off and shared slots."""

from __future__ import annotations

import asyncio

import pytest

from kakitome.config import load_settings
from kakitome.delivery.shaping import (
    MemoryShapingState,
    Shaper,
    primary_mx_host,
    registrable_part,
    site_for_host,
)
from kakitome.delivery.shaping_store import ShapingStore
from kakitome.dns.types import MXHost, MXResult
from kakitome.smtp.replies import Reply
from kakitome.store.database import Database

pytestmark = pytest.mark.heavy


@pytest.mark.parametrize(
    ("host", "site"),
    [
        ("aspmx.l.google.com", "google.com"),
        ("alt1.aspmx.l.google.com.", "google.com"),
        ("gmail-smtp-in.l.google.com", "google.com"),
        ("example-com.mail.protection.outlook.com", "outlook.com"),
        ("mta7.am0.yahoodns.net", "yahoo.com"),
        ("mx01.mail.icloud.com", "icloud.com"),
        ("mfsmax.docomo.ne.jp", "docomo.ne.jp"),
        ("lsean.ezweb.ne.jp", "au.com"),
        ("mx.softbank.ne.jp", "softbank.jp"),
        ("mx1.example.co.jp", "mx1.example.co.jp"),
        ("mail.example.com.", "mail.example.com"),
        ("example.com", "example.com"),
    ],
)
def test_site_rule(host: str, site: str) -> None:
    """The site of an MX host: a known provider's suffix, else the host name itself."""
    assert site_for_host(host) == site


def test_registrable_part_keeps_generic_second_levels() -> None:
    """co.jp / ne.jp style second levels under a country code keep three labels."""
    assert registrable_part("mx.foo.ne.jp") == "foo.ne.jp"
    assert registrable_part("mx.foo.jp") == "foo.jp"
    assert registrable_part("mx.foo.example") == "foo.example"


def test_primary_mx_decides_the_site() -> None:
    """Domains whose primary MX is at one provider share a site, whatever the backups."""
    mx = MXResult(
        "shop.example",
        (
            MXHost("backup.shop.example", 20, ("192.0.2.1",)),
            MXHost("aspmx.l.google.com", 1, ("192.0.2.2",)),
        ),
    )
    shaper = Shaper(load_settings(environ={}))
    assert primary_mx_host(mx) == "aspmx.l.google.com"
    assert shaper.site_of(mx) == "google.com"


def test_provider_and_site_settings() -> None:
    """shaping.providers adds provider suffixes; shaping.sites overrides budgets."""
    settings = load_settings(
        environ={
            "KAKITOME_SHAPING__PROVIDERS": '{"mx.bulk.example": "bulk.example"}',
            "KAKITOME_SHAPING__SITES": '{"google.com": {"max_connections": 3}}',
        }
    )
    shaper = Shaper(settings)
    assert shaper.site_of_host("in1.mx.bulk.example") == "bulk.example"
    assert shaper.limits("google.com").max_connections == 3
    assert shaper.limits("docomo.ne.jp").max_connections == 2  # built-in default
    assert shaper.limits("unknown.example").max_connections == 20


async def test_slow_start_and_back_off() -> None:
    """The window starts small, grows on success, halves on 421 / 4.7.x, then cools down."""
    now = [1000.0]
    settings = load_settings(environ={"KAKITOME_SHAPING__COOLDOWN": "60"})
    shaper = Shaper(settings, MemoryShapingState(), clock=lambda: now[0])
    site = "example.com"
    ok = Reply(250, "2.0.0", "ok")
    async with shaper.connection(site):
        pass
    assert shaper.status()[0].window == 2
    for _ in range(10):
        shaper.observe(site, (ok,))
    assert shaper.status()[0].window == 12
    shaper.observe(site, (Reply(421, "4.7.0", "too many connections, slow down"),))
    status = shaper.status()[0]
    assert status.window == 6 and status.cooling_down and status.backoffs == 1
    await asyncio.sleep(0.3)  # the flush writes it to the shared state
    shaper.observe(site, (Reply(451, "4.7.28", "rate limited"),))  # within the cool-down
    shaper.observe(site, (ok,))
    assert shaper.status()[0].window == 6  # halved once, no growth while cooling down
    now[0] += 61
    shaper.observe(site, (ok,))
    await asyncio.sleep(0.3)
    assert shaper.status()[0].window >= 6


async def test_connections_wait_for_a_slot() -> None:
    """No more than the window's connections are held at once in a process."""
    budget = '{"max_connections": 2, "initial_connections": 2}'
    shaper = Shaper(load_settings(environ={"KAKITOME_SHAPING__DEFAULT": budget}))
    held = 0
    most = 0

    async def use() -> None:
        nonlocal held, most
        async with shaper.connection("example.com"):
            await shaper.before_message("example.com")
            held += 1
            most = max(most, held)
            await asyncio.sleep(0.05)
            held -= 1

    await asyncio.wait_for(asyncio.gather(*(use() for _ in range(8))), 10)
    assert most == 2


async def test_store_slots_are_shared_between_owners(store: Database) -> None:
    """Slots in the database: two workers together never hold more than the limit;
    a dead worker's slot comes back when its lease runs out."""
    shared = ShapingStore(store)
    now = 5000.0
    taken = [await shared.acquire_slot("s.example", 3, "a", now=now, lease=10) for _ in range(2)]
    taken.append(await shared.acquire_slot("s.example", 3, "b", now=now, lease=10))
    assert sorted(t for t in taken if t is not None) == [0, 1, 2]
    assert await shared.acquire_slot("s.example", 3, "b", now=now, lease=10) is None
    assert await shared.held("s.example", now=now) == 3
    # "a" dies: its two slots come back after the lease; "b" renews and keeps its own.
    assert await shared.renew("b", now=now + 8, lease=10) == 1
    later = now + 11
    again = [await shared.acquire_slot("s.example", 3, "c", now=later, lease=10) for _ in range(3)]
    assert sorted(s for s in again if s is not None) == [0, 1]
    await shared.release_slot("s.example", 2, "b")
    assert await shared.acquire_slot("s.example", 3, "c", now=later, lease=10) == 2
    assert await shared.release_all("c") == 3


async def test_store_budgets(store: Database) -> None:
    """Window growth and back-off (once per cool-down) and the per-minute budget."""
    shared = ShapingStore(store)
    assert await shared.window("g.example", initial=2, now=100) == (2.0, 0.0)
    await shared.grow("g.example", 30, limit=20, now=100)
    assert (await shared.window("g.example", initial=2, now=100))[0] == 20
    assert await shared.back_off("g.example", now=100, cooldown=60)
    assert not await shared.back_off("g.example", now=110, cooldown=60)
    assert await shared.window("g.example", initial=2, now=110) == (10.0, 160.0)
    await shared.grow("g.example", 5, limit=20, now=120)  # cooling down: no growth
    assert (await shared.window("g.example", initial=2, now=120))[0] == 10
    assert await shared.take_tokens("g.example", 8, per_minute=10, now=200) == (8, 260.0)
    assert await shared.take_tokens("g.example", 8, per_minute=10, now=210) == (2, 260.0)
    assert await shared.take_tokens("g.example", 8, per_minute=10, now=220) == (0, 260.0)
    assert await shared.take_tokens("g.example", 8, per_minute=10, now=261) == (8, 321.0)
