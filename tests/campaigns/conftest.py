"""Fixtures for campaign tests: a CampaignService over a real ListService and Injector on
each database, with a clock tests move by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kakitome.campaigns.service import CampaignService
from kakitome.campaigns.tracking import LinkSigner
from kakitome.config import Settings
from kakitome.injection import Injector
from kakitome.lists import ListService, NewList, OptIn, TokenSigner
from kakitome.store.database import Database
from tests.fixtures_db import queue_store

_TABLES = (
    "tracking_events, sequence_sends, sequence_steps, sequences, campaign_sends, campaigns, "
    "campaign_templates, segments, subscriber_events, list_members, subscribers, mailing_lists"
)
START = 1_900_000_000.0  # 2030-03-17 17:46:40 UTC = 03-18 02:46:40 in Tokyo
LINK_KEY = b"campaign-link-test-key-0123456789"


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Kit:
    settings: Settings
    store: Database
    clock: Clock
    lists: ListService
    injector: Injector
    campaigns: CampaignService

    def fresh_service(self) -> CampaignService:
        """A second service on the same database (a restarted process)."""
        return CampaignService(
            self.store, self.settings, self.lists, self.injector, clock=self.clock,
            signer=LinkSigner(LINK_KEY, "https://news.example.jp"),
        )  # fmt: skip


def make_settings(tmp_path: Path, **extra: Any) -> Settings:
    data: dict[str, Any] = {
        "http": {"public_url": "https://news.example.jp"},
        "paths": {"data_dir": str(tmp_path)},
        "campaigns": {"batch_size": 100},
    }
    data.update(extra)
    return Settings.model_validate(data)


@pytest.fixture
def clock() -> Clock:
    """A clock at a fixed time."""
    return Clock()


@pytest.fixture
async def kit(
    store: Database, database_url: str, tmp_path: Path, clock: Clock
) -> AsyncIterator[Kit]:
    """Services on an empty database."""
    if database_url.startswith("postgresql"):
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE")
    settings = make_settings(tmp_path)
    injector = Injector(queue_store(store), settings, clock=clock)
    lists = ListService(
        store, settings, injector=injector, clock=clock,
        signer=TokenSigner(b"0123456789abcdef0123456789abcdef"),
    )  # fmt: skip
    service = CampaignService(
        store, settings, lists, injector, clock=clock,
        signer=LinkSigner(LINK_KEY, "https://news.example.jp"),
    )  # fmt: skip
    yield Kit(settings, store, clock, lists, injector, service)


async def make_list(lists: ListService, name: str = "news", **kwargs: Any) -> Any:
    """A single opt-in list with the sender identity the footer needs."""
    values: dict[str, Any] = {
        "title": "書留通信",
        "opt_in": "single",
        "from_name": "書留商店",
        "from_address": "news@example.jp",
        "sender_organization": "書留商店株式会社",
        "sender_postal_address": "東京都千代田区千代田1-1",
        "mail_domain": "lists.example.jp",
    }
    values.update(kwargs)
    return await lists.create_list(NewList(name=name, **values))


async def add_people(lists: ListService, list_name: str, people: list[tuple[str, str]]) -> None:
    """Subscribe (address, name) pairs, confirmed."""
    for address, name in people:
        await lists.add_subscriber(
            list_name, address, name=name, optin=OptIn("cli"), confirmed=True
        )
