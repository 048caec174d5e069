"""Held inbound mail through the API: release hands the message to a forward route and
the forwarder then POSTs it to the route's URL (a real HTTP receiver on loopback);
delete removes it. The same ``kakitome.inbound.held`` code as the CLI; SQLite and
PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from kakitome.config import Settings
from kakitome.inbound.forward import Forwarder
from kakitome.inbound.store import InboundStore
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.web import create_app
from tests.api.conftest import BASE, api_settings, bearer
from tests.fixtures_inbound import Receiver, record_held


def _settings(tmp_path: Path, url: str) -> Settings:
    data: dict[str, Any] = api_settings(tmp_path).model_dump(mode="json")
    data["inbound"]["routes"] = [
        {"match": "@in.example.jp", "action": "forward", "url": url, "secret": "s3cret"},
        {"match": "@other.example.jp", "action": "hold"},
    ]
    return Settings.model_validate(data)


async def test_release_and_delete_held_mail(
    store: Database, tmp_path: Path, hook_receiver: Receiver
) -> None:
    settings = _settings(tmp_path, await hook_receiver.start())
    inbound = InboundStore(store.engine)
    first = await record_held(inbound, "info@in.example.jp", "one")
    second = await record_held(inbound, "info@in.example.jp", "two")
    unrouted = await record_held(inbound, "info@other.example.jp", "three")
    app = create_app(build_services(settings, store, signing=None))
    h = await bearer(store, "admin")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        held = (await c.get("/api/v1/inbound/held", headers=h)).json()["items"]
        assert {m["id"] for m in held} == {first, second, unrouted}

        released = await c.post(f"/api/v1/inbound/{first}/release", headers=h)
        assert released.status_code == 200, released.text
        assert released.json() == {"id": first, "released": True, "route": "@in.example.jp"}
        shown = (await c.get(f"/api/v1/inbound/{first}", headers=h)).json()
        assert shown["status"] == "forward" and shown["route"] == "@in.example.jp"
        again = await c.post(f"/api/v1/inbound/{first}/release", headers=h)
        assert again.status_code == 404  # not held any more

        # No forward route matches this recipient, nor is one named that exists: 422.
        refused = await c.post(f"/api/v1/inbound/{unrouted}/release", headers=h)
        assert refused.status_code == 422, refused.text
        wrong = await c.post(
            f"/api/v1/inbound/{unrouted}/release", json={"route": "@nowhere"}, headers=h
        )
        assert wrong.status_code == 422
        named = await c.post(
            f"/api/v1/inbound/{unrouted}/release", json={"route": "@in.example.jp"}, headers=h
        )
        assert named.status_code == 200 and named.json()["route"] == "@in.example.jp"

        gone = await c.delete(f"/api/v1/inbound/{second}", headers=h)
        assert gone.status_code == 204
        assert (await c.get(f"/api/v1/inbound/{second}", headers=h)).status_code == 404
        assert (await c.delete(f"/api/v1/inbound/{second}", headers=h)).status_code == 404
        # A released message is not held: DELETE does not remove it.
        assert (await c.delete(f"/api/v1/inbound/{first}", headers=h)).status_code == 404
        assert (await c.get("/api/v1/inbound/held", headers=h)).json()["items"] == []

        reader = await bearer(store, "read")
        forbidden = await c.post(f"/api/v1/inbound/{first}/release", headers=reader)
        assert forbidden.status_code == 403

    # What the running service's forwarder does next: POST both released messages.
    assert await Forwarder(inbound, settings.inbound).run_once() == 2
    posted = hook_receiver.bodies
    subjects = sorted(body.split(b"Subject: ")[1].split(b"\r\n")[0] for _, body in posted)
    assert subjects == [b"one", b"three"]
    assert {headers["kakitome-inbound-id"] for headers, _ in posted} == {first, unrouted}
    row = await inbound.get_inbound(first)
    assert row is not None and row.status == "forwarded"
