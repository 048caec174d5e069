"""Every ``/api/v1`` endpoint refuses a request without a key (401) and one whose key lacks
the scope (403). The cases are generated from the app's routes, so a new endpoint is
covered the day it is added; an endpoint without a scope dependency fails the test.

The mapping (README, API section): GET needs ``read``; sending-related POSTs ``send``;
configuration ``admin`` (which includes the other two).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path
from typing import Any

import httpx

from kakitome.config import Settings
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.web import create_app
from tests.api.conftest import BASE, api_settings, bearer

# Non-GET endpoints that only read (so a read key is enough).
READ_POSTS = {("POST", "/api/v1/campaigns/{campaign_id}/preview")}
# GETs of secrets' metadata, and of the whole configuration, for admin keys only.
ADMIN_GETS = {("GET", "/api/v1/api-keys"), ("GET", "/api/v1/settings")}


def _routes() -> list[tuple[str, str]]:
    """(method, path) of every /api/v1 operation in the app's OpenAPI document."""

    async def collect() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            store = await Database.open(f"sqlite:///{tmp}/routes.db")
            try:
                settings = api_settings(Path(tmp))
                return create_app(build_services(settings, store, signing=None)).openapi()
            finally:
                await store.close()

    document = asyncio.run(collect())
    return sorted(
        (method.upper(), path)
        for path, operations in document["paths"].items()
        if path.startswith("/api/v1/")
        for method in operations
    )


def _concrete(path: str) -> str:
    """Fill path parameters with values that pass validation."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in ("domain",):
            return "example.com"
        if name in ("address",):
            return "a@example.com"
        if name in ("username", "inbound_id", "message_id"):
            return "x1"
        return "1"

    return re.sub(r"\{(\w+)\}", value, path)


ROUTES = _routes()


def test_routes_collected() -> None:
    paths = {path for _, path in ROUTES}
    for expected in (
        "/api/v1/domains",
        "/api/v1/lists/{list_id}/subscribers",
        "/api/v1/campaigns/{campaign_id}/send",
        "/api/v1/suppressions",
        "/api/v1/smtp-users",
        "/api/v1/checker/{domain}",
        "/api/v1/policy/{domain}",
        "/api/v1/messages",
        "/api/v1/api-keys",
    ):
        assert expected in paths


async def test_every_endpoint_refuses_missing_and_wrong_scoped_key(
    store: Database, settings: Settings
) -> None:
    """For every operation: 401 without a key or with an unknown one; 403 with a key of the
    wrong scope - a GET needs read (a send-only key is refused), a change needs send or
    admin (a read-only key is refused). One app and one set of keys for all operations."""
    app = create_app(build_services(settings, store, signing=None))
    send_only = await bearer(store, "send")
    read_only = await bearer(store, "read")
    problems: list[str] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        for method, path in ROUTES:
            url = _concrete(path)
            missing = await c.request(method, url, json={})
            if missing.status_code != 401 or missing.json()["error"]["code"] != "unauthorized":
                problems.append(f"{method} {path} without a key: {missing.status_code}")
            elif not missing.headers.get("www-authenticate", "").startswith("Bearer"):
                problems.append(f"{method} {path}: no WWW-Authenticate")
            unknown = await c.request(
                method, url, json={}, headers={"Authorization": "Bearer kk_x_y"}
            )
            if unknown.status_code != 401:
                problems.append(f"{method} {path} with an unknown key: {unknown.status_code}")
            reads = (method == "GET" or (method, path) in READ_POSTS) and (
                method,
                path,
            ) not in ADMIN_GETS
            refused = await c.request(
                method, url, json={}, headers=send_only if reads else read_only
            )
            if refused.status_code != 403 or refused.json()["error"]["code"] != "forbidden":
                problems.append(f"{method} {path} with a wrong-scoped key: {refused.status_code}")
            if reads:
                right = await c.request(method, url, json={}, headers=read_only)
                if right.status_code in (401, 403):
                    problems.append(f"{method} {path} refuses a read key: {right.status_code}")
    assert not problems, "\n".join(problems)
