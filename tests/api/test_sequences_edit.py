"""``PATCH`` and ``DELETE /api/v1/sequences/{id}``: pausing stops step mail and
reactivating resumes it (seen through the campaign runner on the same store and clock);
deleting removes the sequence and its steps. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select

from kakitome.campaigns.service import CampaignService
from kakitome.config import Settings
from kakitome.services import build_services
from kakitome.store.database import Database
from kakitome.store.schema_campaigns import sequence_steps
from kakitome.web import create_app
from tests.api.conftest import BASE, bearer


@dataclass
class Clock:
    now: float = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Kit:
    client: httpx.AsyncClient
    runner: CampaignService
    clock: Clock
    headers: dict[str, str]


@pytest.fixture
async def kit(store: Database, settings: Settings) -> AsyncIterator[Kit]:
    clock = Clock()
    services = build_services(settings, store, signing=None, clock=clock)
    app = create_app(services)
    runner = services.campaigns
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield Kit(client, runner, clock, await bearer(store))


async def _setup(kit: Kit) -> tuple[int, int]:
    """A list, a sequence with one step due at once, and one subscriber who joins after
    the sequence exists: (list id, sequence id)."""
    c, h = kit.client, kit.headers
    made = await c.post(
        "/api/v1/lists",
        json={
            "name": "news",
            "opt_in": "single",
            "from_address": "news@example.jp",
            "sender_organization": "書留",
            "sender_postal_address": "東京都",
        },
        headers=h,
    )
    list_id = made.json()["id"]
    seq = await c.post("/api/v1/sequences", json={"name": "welcome", "list_id": list_id}, headers=h)
    assert seq.status_code == 201, seq.text
    step = await c.post(
        f"/api/v1/sequences/{seq.json()['id']}/steps",
        json={"delay_days": 0, "subject": "Welcome", "body": "<p>Hi</p>"},
        headers=h,
    )
    assert step.status_code == 201, step.text
    kit.clock.now += 60
    joined = await c.post(
        f"/api/v1/lists/{list_id}/subscribers", json={"email": "a@example.com"}, headers=h
    )
    assert joined.status_code == 201, joined.text
    return list_id, seq.json()["id"]


async def test_pause_and_reactivate_a_sequence(kit: Kit) -> None:
    """Paused: nothing is sent; active again: the step that fell due goes out."""
    _, seq_id = await _setup(kit)
    c, h = kit.client, kit.headers
    paused = await c.patch(
        f"/api/v1/sequences/{seq_id}", json={"status": "paused", "name": "welcome-2"}, headers=h
    )
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused" and paused.json()["name"] == "welcome-2"
    assert len(paused.json()["steps"]) == 1
    kit.clock.now += 3600
    assert await kit.runner.run_sequences() == 0
    shown = (await c.get(f"/api/v1/sequences/{seq_id}", headers=h)).json()
    assert shown["status"] == "paused" and shown["name"] == "welcome-2"
    active = await c.patch(f"/api/v1/sequences/{seq_id}", json={"status": "active"}, headers=h)
    assert active.json()["status"] == "active"
    assert await kit.runner.run_sequences() == 1


async def test_sequence_edit_refusals(kit: Kit) -> None:
    """Footer off while a step has no unsubscribe link, an unknown status, a null or a
    name taken: 422 and nothing changed; an unknown sequence: 404."""
    list_id, seq_id = await _setup(kit)
    c, h = kit.client, kit.headers
    other = await c.post("/api/v1/sequences", json={"name": "other", "list_id": list_id}, headers=h)
    assert other.status_code == 201
    before = (await c.get(f"/api/v1/sequences/{seq_id}", headers=h)).json()
    for bad in ({"footer": False}, {"status": "stopped"}, {"tracking": None}, {"name": "other"}):
        refused = await c.patch(f"/api/v1/sequences/{seq_id}", json=bad, headers=h)
        assert refused.status_code == 422, (bad, refused.text)
    assert (await c.get(f"/api/v1/sequences/{seq_id}", headers=h)).json() == before
    missing = await c.patch("/api/v1/sequences/999999", json={"name": "x"}, headers=h)
    assert missing.status_code == 404


async def test_delete_sequence_removes_it_and_its_steps(kit: Kit, store: Database) -> None:
    _, seq_id = await _setup(kit)
    c, h = kit.client, kit.headers
    assert await kit.runner.run_sequences() == 1  # a send record exists for the step
    gone = await c.delete(f"/api/v1/sequences/{seq_id}", headers=h)
    assert gone.status_code == 204, gone.text
    assert (await c.get(f"/api/v1/sequences/{seq_id}", headers=h)).status_code == 404
    listed = (await c.get("/api/v1/sequences", headers=h)).json()["items"]
    assert seq_id not in [s["id"] for s in listed]
    async with store.engine.connect() as conn:
        steps = await conn.scalar(
            select(func.count()).where(sequence_steps.c.sequence_id == seq_id)
        )
    assert steps == 0
    assert (await c.delete(f"/api/v1/sequences/{seq_id}", headers=h)).status_code == 404
