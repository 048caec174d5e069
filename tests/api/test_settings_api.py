"""``/api/v1/settings`` and ``/api/v1/routes``: change settings at run time, all or nothing."""

from __future__ import annotations

import time

import httpx

from kakitome.inbound.store import InboundStore, NewInbound
from kakitome.store.database import Database
from kakitome.store.settings_store import SettingsStore
from tests.api.conftest import bearer


def by_key(body: dict[str, object]) -> dict[str, dict[str, object]]:
    settings = body["settings"]
    assert isinstance(settings, list)
    return {s["key"]: s for s in settings}


async def test_settings_show_source_and_hide_secrets(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Every key is listed with its source; secrets and non-editable keys are marked."""
    response = await client.get("/api/v1/settings", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["precedence"] == ["environment", "database", "file", "default"]
    keys = by_key(body)
    assert keys["queue.retry_first"]["source"] == "default"
    assert keys["queue.retry_first"]["editable"] is True
    assert keys["queue.retry_first"]["applies"] == "at_next_start"
    assert keys["inbound.routes"]["applies"] == "at_once"
    assert keys["http.public_url"]["source"] == "file"
    assert keys["database.url"]["editable"] is False
    assert keys["database.url"]["applies"] is None


async def test_settings_need_the_admin_scope(client: httpx.AsyncClient, store: Database) -> None:
    """A read key may not see or change settings."""
    reader = await bearer(store, "read")
    assert (await client.get("/api/v1/settings", headers=reader)).status_code == 403
    patch = await client.patch("/api/v1/settings", json={"queue.retry_first": 1}, headers=reader)
    assert patch.status_code == 403
    assert await SettingsStore(store.engine).values() == {}


async def test_patch_stores_and_null_resets(
    client: httpx.AsyncClient, admin: dict[str, str], store: Database
) -> None:
    """A valid change is stored and shown as from the database; null gives it back."""
    response = await client.patch(
        "/api/v1/settings",
        json={"queue.retry_first": "60", "tls.policy": {"bank.example": "verify"}},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    keys = by_key(response.json())
    assert keys["queue.retry_first"]["value"] == 60.0
    assert keys["queue.retry_first"]["source"] == "database"
    assert keys["queue.retry_first"]["updated_by"] == "api key api-test"
    assert keys["tls.policy"]["value"] == {"bank.example": "verify"}
    assert await SettingsStore(store.engine).values() == {
        "queue.retry_first": 60.0,
        "tls.policy": {"bank.example": "verify"},
    }
    response = await client.patch("/api/v1/settings", json={"tls.policy": None}, headers=admin)
    keys = by_key(response.json())
    assert keys["tls.policy"]["source"] == "default"
    assert keys["tls.policy"]["value"] == {}
    assert await SettingsStore(store.engine).values() == {"queue.retry_first": 60.0}


async def test_invalid_patch_stores_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], store: Database
) -> None:
    """One bad value refuses the whole change, each problem named in the message."""
    response = await client.patch(
        "/api/v1/settings",
        json={"queue.retry_max": 600, "queue.retry_first": -1, "database.url": "sqlite:///x"},
        headers=admin,
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_settings"
    assert "queue.retry_first: Input should be greater than or equal to 0" in error["message"]
    assert "database.url: this setting cannot be changed at run time" in error["message"]
    assert await SettingsStore(store.engine).values() == {}
    reset = await client.patch("/api/v1/settings", json={"http.port": None}, headers=admin)
    assert reset.status_code == 422


async def test_routes_put_replaces_in_order_and_keeps_secrets(
    client: httpx.AsyncClient, admin: dict[str, str], store: Database
) -> None:
    """PUT sets the ordered list; a route that leaves its secret out keeps it; GET never
    shows a secret."""
    routes = [
        {
            "match": "help@in.example",
            "action": "forward",
            "url": "https://app.example/in",
            "secret": "route-secret-1",
        },
        {"match": "@in.example", "action": "hold"},
    ]
    response = await client.put("/api/v1/routes", json={"routes": routes}, headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "database"
    assert [r["match"] for r in body["routes"]] == ["help@in.example", "@in.example"]
    assert body["routes"][0]["has_secret"] is True
    # Reordered, and the forward route edited without mentioning its secret.
    reordered = [
        {"match": "@in.example", "action": "hold"},
        {"match": "help@in.example", "action": "forward", "url": "https://app.example/v2"},
    ]
    response = await client.put("/api/v1/routes", json={"routes": reordered}, headers=admin)
    assert [r["match"] for r in response.json()["routes"]] == ["@in.example", "help@in.example"]
    stored = (await SettingsStore(store.engine).values())["inbound.routes"]
    assert stored[1] == {
        "match": "help@in.example",
        "action": "forward",
        "url": "https://app.example/v2",
        "secret": "route-secret-1",
    }
    reader = await bearer(store, "read")
    shown = await client.get("/api/v1/routes", headers=reader)
    assert shown.status_code == 200
    assert "route-secret-1" not in shown.text
    assert shown.json()["routes"][1]["has_secret"] is True
    # "secret": null removes it.
    reordered[1]["secret"] = None
    response = await client.put("/api/v1/routes", json={"routes": reordered}, headers=admin)
    assert response.json()["routes"][1]["has_secret"] is False


async def test_invalid_routes_are_refused_and_nothing_changes(
    client: httpx.AsyncClient, admin: dict[str, str], store: Database
) -> None:
    """A forward route without a URL is refused (422) and the stored routes stay."""
    good = [{"match": "*", "action": "hold"}]
    assert (await client.put("/api/v1/routes", json={"routes": good}, headers=admin)).is_success
    bad = [{"match": "a@in.example", "action": "forward"}, {"match": "*", "action": "hold"}]
    response = await client.put("/api/v1/routes", json={"routes": bad}, headers=admin)
    assert response.status_code == 422
    assert "inbound.routes.0.url" in response.json()["error"]["message"]
    assert (await SettingsStore(store.engine).values())["inbound.routes"] == [
        {"match": "*", "action": "hold", "url": None, "secret": None}
    ]
    reader = await bearer(store, "read")
    put = await client.put("/api/v1/routes", json={"routes": good}, headers=reader)
    assert put.status_code == 403


async def test_held_mail_is_released_to_a_route_added_at_run_time(
    client: httpx.AsyncClient, admin: dict[str, str], store: Database
) -> None:
    """Releasing held mail looks at the routes as they are now, not as they were when the
    process started: a forward route PUT a moment ago takes it."""
    inbound = InboundStore(store.engine)
    held = await inbound.record_inbound(
        NewInbound(
            received_at=time.time(),
            listener="mx",
            kind="route",
            status="held",
            content=b"From: a@b.test\r\nTo: info@in.example\r\nSubject: s\r\n\r\nhi\r\n",
            recipients=("info@in.example",),
            mail_from="a@b.test",
        )
    )
    before = await client.post(f"/api/v1/inbound/{held}/release", headers=admin)
    assert before.status_code == 422  # no forward route yet
    routes = [{"match": "@in.example", "action": "forward", "url": "https://app.example/in"}]
    assert (await client.put("/api/v1/routes", json={"routes": routes}, headers=admin)).is_success
    released = await client.post(f"/api/v1/inbound/{held}/release", headers=admin)
    assert released.status_code == 200, released.text
    assert released.json()["route"] == "@in.example"
    row = await inbound.get_inbound(held)
    assert row is not None and row.status == "forward"
