"""Fixtures for the sending-domain tests: settings pointing at the local internet, a
service on both databases, and publishing `domain dns` records into the world's DNS."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from kakitome.config import Settings
from kakitome.domains.service import DomainService
from kakitome.store.database import Database
from kakitome.store.schema_domains import dkim_keys, sending_domains
from kakitome.testing import LocalInternet

_counter = itertools.count(10)


@dataclass
class Env:
    """One test's names: its domain, sending IP and HELO name, all unique in the world."""

    world: LocalInternet
    domain: str
    ip: str
    helo: str
    env: dict[str, str]
    settings: Settings

    def publish(
        self,
        records: dict[str, Any],
        *,
        skip: Callable[[dict[str, Any]], bool] = lambda r: False,
        ptr: bool = True,
    ) -> None:
        """Write the records `domain dns --json` printed into the DNS (minus ``skip``)."""
        dns = self.world.dns
        for record in records["records"]:
            if skip(record) or record["purpose"] == "dmarc_report_authorization":
                continue
            if record["type"] == "TXT":
                dns.add_txt(record["name"], record["value"])
            else:
                preference, _, host = record["value"].partition(" ")
                dns.add_mx(record["name"], int(preference), host)
        if ptr:
            dns.add_ptr(self.ip, self.helo)
            dns.add_a(self.helo, self.ip)


@pytest.fixture
def domain_env(world: LocalInternet, tmp_path: Path) -> Iterator[Env]:
    """Settings for one test: unique domain, sending IP and HELO name; keys sealed with a
    key file in tmp_path; DNS timeout 1 s. The names are removed from DNS afterwards."""
    n = next(_counter)
    ip = f"198.51.100.{n % 250 + 1}" if n < 250 else f"203.0.113.{n % 250 + 1}"
    domain = world.unique_domain("send")
    helo = f"mail-{n}.kakitome.test"
    secret = tmp_path / "secret.key"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    env = {
        "KAKITOME_DELIVERY__HELO_HOSTNAME": helo,
        "KAKITOME_DOMAINS__SENDING_IPS": ip,
        "KAKITOME_DOMAINS__KEY_FILE": str(secret),
        "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "var"),
        "KAKITOME_DNS__TIMEOUT": "1",
    }
    yield Env(world, domain, ip, helo, env, world.settings(env))
    world.dns.remove_tree(domain)
    world.dns.remove_tree(helo)
    world.dns.remove(ipaddress.ip_address(ip).reverse_pointer)


@pytest.fixture
async def domain_store(store: Database) -> AsyncIterator[Database]:
    """The store, with no sending domains left by an earlier test (PostgreSQL is shared)."""
    async with store.engine.begin() as conn:
        await conn.execute(delete(dkim_keys))
        await conn.execute(delete(sending_domains))
    yield store


@pytest.fixture
def service(domain_store: Database, domain_env: Env) -> DomainService:
    """A DomainService on both databases, using the world's DNS."""
    return DomainService(domain_store, domain_env.settings)
