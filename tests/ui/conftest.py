"""Fixtures for the admin UI tests: an app on the ``store`` fixture, users, logged-in clients."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from sqlalchemy import delete

from kakitome.accounts.store import WebStore
from kakitome.config import Settings
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.store.schema_web import (
    web_login_attempts,
    web_sessions,
    web_stats_cursor,
    web_stats_hourly,
    web_users,
)
from kakitome.web import create_app

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

Login = Callable[[str, str], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def web(store: Database) -> WebStore:
    """A WebStore on empty UI tables (PostgreSQL keeps tables between tests)."""
    async with store.engine.begin() as conn:
        for table in (
            web_sessions,
            web_login_attempts,
            web_users,
            web_stats_hourly,
            web_stats_cursor,
        ):
            await conn.execute(delete(table))
    return WebStore(store.engine)


@pytest.fixture
async def app_transport(store: Database, web: WebStore) -> httpx.ASGITransport:
    settings = Settings()
    return httpx.ASGITransport(app=create_app(build_services(settings, store, signing=None)))


@pytest.fixture
async def client(app_transport: httpx.ASGITransport) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=app_transport, base_url="http://kakitome.test") as c:
        yield c


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


async def login_as(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD
) -> httpx.Response:
    page = await client.get("/ui/login")
    return await client.post(
        "/ui/login",
        data={"csrf_token": csrf_of(page.text), "username": username, "password": password},
    )


@pytest.fixture
async def user_client(app_transport: httpx.ASGITransport, web: WebStore) -> AsyncIterator[Login]:
    """``await user_client(name, role)``: a new client logged in as a new user."""
    clients: list[httpx.AsyncClient] = []

    async def make(username: str, role: str) -> httpx.AsyncClient:
        await web.create_user(username, PASSWORD, role, now=time.time())
        c = httpx.AsyncClient(transport=app_transport, base_url="http://kakitome.test")
        clients.append(c)
        response = await login_as(c, username)
        assert response.status_code == 303, response.text
        return c

    yield make
    for c in clients:
        await c.aclose()
