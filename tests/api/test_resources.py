"""Happy paths of the API v1 resources, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx

from kakitome.store.database import Database
from tests.api.conftest import bearer


async def test_lists_subscribers_segments(client: httpx.AsyncClient, store: Database) -> None:
    h = await bearer(store)
    made = await client.post(
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
    assert made.status_code == 201, made.text
    list_id = made.json()["id"]
    added = await client.post(
        f"/api/v1/lists/{list_id}/subscribers",
        json={"email": "a@example.com", "name": "山田", "attributes": {"plan": "pro"}},
        headers=h,
    )
    assert added.status_code == 201, added.text
    assert added.json()["status"] == "subscribed"
    csv = "email,name\nb@example.com,B\nc@example.com,C\nnot-an-address,X\n"
    report = await client.post(
        f"/api/v1/lists/{list_id}/subscribers/import",
        content=csv.encode(),
        headers={**h, "Content-Type": "text/csv"},
    )
    assert report.status_code == 200, report.text
    assert report.json()["inserted"] == 2 and len(report.json()["rejected"]) == 1
    page = await client.get(f"/api/v1/lists/{list_id}/subscribers?limit=2", headers=h)
    assert page.status_code == 200
    assert len(page.json()["items"]) == 2 and page.json()["next"]
    rest = await client.get(
        f"/api/v1/lists/{list_id}/subscribers?limit=2&cursor={page.json()['next']}", headers=h
    )
    assert [s["address"] for s in rest.json()["items"]] == ["c@example.com"]
    assert rest.json()["next"] is None
    first = page.json()["items"][0]["id"]
    patched = await client.patch(
        f"/api/v1/lists/{list_id}/subscribers/{first}",
        json={"status": "unsubscribed"},
        headers=h,
    )
    assert patched.json()["status"] == "unsubscribed"
    export = await client.get(f"/api/v1/lists/{list_id}/subscribers/export", headers=h)
    assert export.status_code == 200 and "b@example.com" in export.text
    segment = await client.post(
        "/api/v1/segments",
        json={"name": "pro", "expression": 'attr.plan = "pro"', "list_id": list_id},
        headers=h,
    )
    if segment.status_code == 201:
        count = await client.get(f"/api/v1/segments/{segment.json()['id']}/count", headers=h)
        assert count.status_code == 200
    else:
        assert segment.status_code == 422, segment.text
    gone = await client.delete(f"/api/v1/lists/{list_id}/subscribers/{first}", headers=h)
    assert gone.status_code == 204
    missing = await client.get(f"/api/v1/lists/{list_id}/subscribers/{first}", headers=h)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert (await client.get("/api/v1/lists/999999", headers=h)).status_code == 404


async def test_domains(client: httpx.AsyncClient, store: Database) -> None:
    h = await bearer(store, "admin")
    made = await client.post("/api/v1/domains", json={"domain": "例え.jp"}, headers=h)
    assert made.status_code == 201, made.text
    assert made.json()["domain"] == "xn--r8jz45g.jp"
    assert made.json()["dns"]["records"]
    shown = await client.get("/api/v1/domains/xn--r8jz45g.jp", headers=h)
    assert shown.status_code == 200
    rotated = await client.post("/api/v1/domains/例え.jp/rotate-dkim", headers=h)
    assert rotated.status_code == 200, rotated.text
    assert any(k["state"] == "pending" for k in rotated.json()["keys"])
    listed = await client.get("/api/v1/domains", headers=h)
    assert [d["domain"] for d in listed.json()["items"]] == ["xn--r8jz45g.jp"]
    assert (await client.delete("/api/v1/domains/例え.jp", headers=h)).status_code == 204
    assert (await client.get("/api/v1/domains/例え.jp", headers=h)).status_code == 404


async def test_suppression_and_smtp_users(client: httpx.AsyncClient, store: Database) -> None:
    h = await bearer(store, "admin")
    added = await client.post("/api/v1/suppressions", json={"address": "X@Example.COM"}, headers=h)
    assert added.status_code == 201 and added.json() == {"address": "x@example.com", "added": True}
    listed = await client.get("/api/v1/suppressions", headers=h)
    assert [s["address"] for s in listed.json()["items"]] == ["x@example.com"]
    assert (await client.delete("/api/v1/suppressions/x@example.com", headers=h)).status_code == 204
    assert (await client.delete("/api/v1/suppressions/x@example.com", headers=h)).status_code == 404
    user = await client.post("/api/v1/smtp-users", json={"username": "app"}, headers=h)
    assert user.status_code == 201 and len(user.json()["password"]) >= 24
    again = await client.post("/api/v1/smtp-users", json={"username": "app"}, headers=h)
    assert again.status_code == 409
    users = await client.get("/api/v1/smtp-users", headers=h)
    assert "password" not in users.json()["items"][0]
    assert (await client.delete("/api/v1/smtp-users/app", headers=h)).status_code == 204
    assert (await client.get("/api/v1/inbound/held", headers=h)).json() == {
        "items": [],
        "next": None,
    }
    assert (await client.get("/api/v1/tls-reports/5", headers=h)).status_code == 404


async def test_campaign_life(client: httpx.AsyncClient, store: Database) -> None:
    h = await bearer(store)
    list_id = (
        await client.post(
            "/api/v1/lists",
            json={
                "name": "c",
                "opt_in": "single",
                "from_address": "news@example.jp",
                "sender_organization": "書留",
                "sender_postal_address": "東京都",
            },
            headers=h,
        )
    ).json()["id"]
    made = await client.post(
        "/api/v1/campaigns",
        json={
            "name": "spring",
            "list_id": list_id,
            "subject": "Hi {{ name }}",
            "body": "<p>Hello</p>",
        },
        headers=h,
    )
    assert made.status_code == 201, made.text
    cid = made.json()["id"]
    preview = await client.post(f"/api/v1/campaigns/{cid}/preview", headers=h)
    assert preview.status_code == 200, preview.text
    edited = await client.patch(f"/api/v1/campaigns/{cid}", json={"subject": "Hey"}, headers=h)
    assert edited.json()["subject"] == "Hey"
    test = await client.post(
        f"/api/v1/campaigns/{cid}/test", json={"to": ["t@example.com"]}, headers=h
    )
    assert test.status_code == 200 and len(test.json()["message_ids"]) == 1
    scheduled = await client.post(f"/api/v1/campaigns/{cid}/schedule", json={"at": 4e9}, headers=h)
    assert scheduled.json()["status"] == "scheduled"
    assert (await client.post(f"/api/v1/campaigns/{cid}/pause", headers=h)).json()[
        "status"
    ] == "paused"
    bad = await client.post(f"/api/v1/campaigns/{cid}/pause", headers=h)
    assert bad.status_code == 422
    cancelled = await client.post(f"/api/v1/campaigns/{cid}/cancel", headers=h)
    assert cancelled.json()["status"] == "cancelled"
    assert (await client.get(f"/api/v1/campaigns/{cid}/stats", headers=h)).status_code == 200
    assert (await client.delete(f"/api/v1/campaigns/{cid}", headers=h)).status_code == 204
    seq = await client.post(
        "/api/v1/sequences", json={"name": "welcome", "list_id": list_id}, headers=h
    )
    assert seq.status_code == 201, seq.text
    step = await client.post(
        f"/api/v1/sequences/{seq.json()['id']}/steps",
        json={"delay_days": 1, "subject": "Welcome", "body": "<p>Hi</p>"},
        headers=h,
    )
    assert step.status_code == 201, step.text
    shown = await client.get(f"/api/v1/sequences/{seq.json()['id']}", headers=h)
    assert len(shown.json()["steps"]) == 1
