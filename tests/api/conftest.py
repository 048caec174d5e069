"""Fixtures for the API v1 resource tests: an app on the ``store`` fixture and keys."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kakitome.accounts.api_keys import ApiKeyStore
from kakitome.config import Settings
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.web import create_app

BASE = "http://kakitome.test"


def api_settings(tmp_path: Path) -> Settings:
    """Settings whose DNS fails at once (a closed port on loopback): checks and verifications
    stay fast and never leave the machine."""
    data: dict[str, Any] = {
        "http": {"public_url": "https://news.example.jp"},
        "paths": {"data_dir": str(tmp_path)},
        "dns": {"nameservers": ["127.0.0.1:9"], "timeout": 0.5},
        "checker": {"probe_timeout": 2, "connect_timeout": 1, "policy_timeout": 1},
    }
    return Settings.model_validate(data)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return api_settings(tmp_path)


@pytest.fixture
async def client(store: Database, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(build_services(settings, store, signing=None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
        yield c


async def bearer(store: Database, *scopes: str) -> dict[str, str]:
    """Headers with a new key of these scopes (all three when none given)."""
    key = await ApiKeyStore(store).create_api_key(
        "api-test", scopes or ("send", "read", "admin"), now=time.time()
    )
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def admin(store: Database) -> dict[str, str]:
    return await bearer(store, "admin")
