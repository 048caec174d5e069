"""API v1 edits: PATCH a list, PUT a segment in place; checked through GET and the
service (on SQLite and PostgreSQL)."""

from __future__ import annotations

import httpx

from kakitome.store.database import Database
from tests.api.conftest import bearer

LIST = {
    "name": "news",
    "opt_in": "single",
    "from_address": "news@example.jp",
    "sender_organization": "書留",
    "sender_postal_address": "東京都",
}


async def test_patch_list_changes_only_the_given_fields(
    client: httpx.AsyncClient, store: Database
) -> None:
    """PATCH sets the given fields, keeps the rest, validates like create (422 and nothing
    written), refuses a new name and a null for a required field, and needs admin."""
    h = await bearer(store, "admin")
    made = await client.post("/api/v1/lists", json=LIST, headers=h)
    assert made.status_code == 201, made.text
    list_id = made.json()["id"]
    patched = await client.patch(
        f"/api/v1/lists/{list_id}",
        json={
            "title": "週刊ニュース",
            "from_address": "Weekly@Example.JP",
            "time_zone": "Europe/Paris",
            "quiet_start": "22:00",
            "quiet_end": "07:00",
            "opt_in": "double",
        },
        headers=h,
    )
    assert patched.status_code == 200, patched.text
    shown = (await client.get(f"/api/v1/lists/{list_id}", headers=h)).json()
    assert shown["title"] == "週刊ニュース"
    assert shown["from_address"] == "Weekly@example.jp"  # checked as on create
    assert shown["time_zone"] == "Europe/Paris" and shown["opt_in"] == "double"
    assert (shown["quiet_start"], shown["quiet_end"]) == ("22:00", "07:00")
    assert shown["name"] == "news" and shown["sender_organization"] == "書留"

    for bad in (
        {"time_zone": "Mars/Olympus"},
        {"quiet_start": None},  # quiet_end alone
        {"from_address": "not an address"},
        {"title": None},
        {"name": "renamed"},
    ):
        refused = await client.patch(f"/api/v1/lists/{list_id}", json=bad, headers=h)
        assert refused.status_code == 422, (bad, refused.text)
    after = (await client.get(f"/api/v1/lists/{list_id}", headers=h)).json()
    assert after == shown

    cleared = await client.patch(
        f"/api/v1/lists/{list_id}", json={"quiet_start": None, "quiet_end": None}, headers=h
    )
    assert cleared.status_code == 200
    assert cleared.json()["quiet_start"] is None and cleared.json()["quiet_end"] is None

    sender = await bearer(store, "send")
    forbidden = await client.patch(f"/api/v1/lists/{list_id}", json={"title": "x"}, headers=sender)
    assert forbidden.status_code == 403
    missing = await client.patch("/api/v1/lists/999999", json={"title": "x"}, headers=h)
    assert missing.status_code == 404


async def test_put_segment_keeps_its_id(client: httpx.AsyncClient, store: Database) -> None:
    """PUT replaces name and expression in place: same id, new content; an invalid
    expression or a taken name is 422 and the segment stays as it was."""
    h = await bearer(store)
    list_id = (await client.post("/api/v1/lists", json=LIST, headers=h)).json()["id"]
    made = await client.post(
        "/api/v1/segments",
        json={"name": "pro", "expression": 'attr.plan = "pro"', "list_id": list_id},
        headers=h,
    )
    assert made.status_code == 201, made.text
    other = await client.post(
        "/api/v1/segments", json={"name": "other", "expression": 'attr.plan = "x"'}, headers=h
    )
    assert other.status_code == 201, other.text
    segment_id = made.json()["id"]
    put = await client.put(
        f"/api/v1/segments/{segment_id}",
        json={"name": "premium", "expression": 'attr.plan = "premium"', "list_id": list_id},
        headers=h,
    )
    assert put.status_code == 200, put.text
    assert put.json()["id"] == segment_id
    shown = (await client.get(f"/api/v1/segments/{segment_id}", headers=h)).json()
    assert shown["name"] == "premium" and "premium" in shown["expression"]
    names = [s["name"] for s in (await client.get("/api/v1/segments", headers=h)).json()["items"]]
    assert sorted(names) == ["other", "premium"]

    for bad in (
        {"name": "other", "expression": 'attr.plan = "y"'},
        {"name": "premium", "expression": "(("},
    ):
        refused = await client.put(f"/api/v1/segments/{segment_id}", json=bad, headers=h)
        assert refused.status_code == 422, (bad, refused.text)
    assert (await client.get(f"/api/v1/segments/{segment_id}", headers=h)).json() == shown
    missing = await client.put(
        "/api/v1/segments/999999", json={"name": "z", "expression": 'attr.plan = "z"'}, headers=h
    )
    assert missing.status_code == 404
