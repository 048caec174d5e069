"""Schemathesis against the app's OpenAPI document: no operation of ``/api/v1`` answers
with a server error (5xx), whatever schema-valid or schema-invalid input it gets.

A bounded run (``MAX_EXAMPLES`` per operation, no deadline) so it fits in ``make test``.
The app and its store live on one event loop in a background thread (an anyio portal);
each generated case is sent there through httpx's ASGI transport with an admin key, on
SQLite and on PostgreSQL (NUL characters and integer overflows differ between them).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from kakitome.accounts.api_keys import ApiKeyStore
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.web import create_app
from tests.api.conftest import BASE, api_settings
from tests.fixtures_db import ENGINES, _truncate

MAX_EXAMPLES = 8

schemathesis.serializer.alias("text/csv", "application/octet-stream")


def _document() -> dict[str, Any]:
    async def collect() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            store = await Database.open(f"sqlite:///{tmp}/schema.db")
            try:
                config = api_settings(Path(tmp))
                return create_app(build_services(config, store, signing=None)).openapi()
            finally:
                await store.close()

    return asyncio.run(collect())


schema = schemathesis.openapi.from_dict(_document()).include(path_regex=r"^/api/v1/")
# Examples and random fuzzing, bounded by MAX_EXAMPLES; the coverage phase (every boundary
# case of every parameter, unbounded) would take minutes.
schema.config.phases.update(phases=["examples", "fuzzing"])


@dataclass
class Live:
    portal: BlockingPortal
    client: httpx.AsyncClient
    headers: dict[str, str]

    store: Database

    def new_key(self) -> None:
        key = self.portal.call(
            lambda: ApiKeyStore(self.store).create_api_key("fuzz", ("admin",), now=time.time())
        )
        self.headers = {"Authorization": f"Bearer {key}"}

    def send(self, kwargs: dict[str, Any]) -> httpx.Response:
        request: dict[str, Any] = {
            "method": kwargs["method"],
            "url": kwargs["url"],
            "headers": {**(kwargs.get("headers") or {}), **self.headers},
            "params": kwargs.get("params"),
        }
        if kwargs.get("cookies"):
            request["headers"]["Cookie"] = "; ".join(
                f"{k}={v}" for k, v in kwargs["cookies"].items()
            )
        if "json" in kwargs:
            request["json"] = kwargs["json"]
        data = kwargs.get("data")
        if isinstance(data, bytes | str):
            request["content"] = data
        elif data is not None:
            request["data"] = data
        if kwargs.get("files"):
            request["files"] = kwargs["files"]

        async def call() -> httpx.Response:
            response = await self.client.request(**request)
            await response.aread()
            return response

        return self.portal.call(call)


@pytest.fixture(scope="module", params=ENGINES)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'kakitome.db'}"
    else:
        url = request.getfixturevalue("pg_database")
        _truncate(url)
    config = api_settings(tmp)
    with start_blocking_portal() as portal:
        store = portal.call(Database.open, url)
        key = portal.call(
            lambda: ApiKeyStore(store).create_api_key("fuzz", ("admin",), now=time.time())
        )
        app = create_app(build_services(config, store, signing=None))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
        try:
            yield Live(portal, client, {"Authorization": f"Bearer {key}"}, store)
        finally:
            portal.call(client.aclose)
            portal.call(store.close)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],
    derandomize=True,
)
def test_no_server_error(case: schemathesis.Case[Any], live: Live) -> None:
    kwargs = case.as_transport_kwargs(base_url=BASE)
    response = live.send(kwargs)
    if case.path == "/api/v1/api-keys/{key_id}":
        live.new_key()  # the case may have revoked the fuzzing key itself
    case.validate_response(response, checks=[not_a_server_error])
