"""Fixtures for list tests: a ListService on each database, with a fixed clock and a
capturing injector."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kakitome.config import Settings
from kakitome.lists import ListService, NewList, TokenSigner
from kakitome.store.database import Database

# The MX listener fixture of the inbound tests, for the blank-mail tests (test_blank_mail.py).
from tests.inbound.conftest import start_inbound  # noqa: F401

_TABLES = "segments, subscriber_events, list_members, subscribers, mailing_lists"
START = 1_750_000_000.0


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class SentMail:
    """What a fake injector was asked to send."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    async def submit_fields(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        return f"m{len(self.calls)}"


@pytest.fixture
def clock() -> Clock:
    """A clock at a fixed time."""
    return Clock()


@pytest.fixture
def sent() -> SentMail:
    """A stand-in for the Injector that records confirmation mails."""
    return SentMail()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a public URL and a data dir of the test's own."""
    return Settings.model_validate(
        {"http": {"public_url": "https://news.example.jp"}, "paths": {"data_dir": str(tmp_path)}}
    )


@pytest.fixture
async def service(
    store: Database, database_url: str, settings: Settings, clock: Clock, sent: SentMail
) -> AsyncIterator[ListService]:
    """A ListService on an empty database."""
    if database_url.startswith("postgresql"):
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE")
    yield ListService(
        store,
        settings,
        injector=sent,  # type: ignore[arg-type]
        clock=clock,
        signer=TokenSigner(b"0123456789abcdef0123456789abcdef"),
    )


async def make_list(service: ListService, name: str = "news", **kwargs: Any) -> Any:
    """A list with a sender and a mail domain."""
    values: dict[str, Any] = {
        "title": "テスト通信",
        "opt_in": "single",
        "from_name": "書留商店",
        "from_address": "news@example.jp",
        "sender_organization": "書留商店株式会社",
        "sender_postal_address": "東京都千代田区1-1",
        "mail_domain": "lists.example.jp",
    }
    values.update(kwargs)
    return await service.create_list(NewList(name=name, **values))
