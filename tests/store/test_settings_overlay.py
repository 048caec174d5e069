"""The settings overlay on SQLite and PostgreSQL: storing, precedence, reloading."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import StatementError

from kakitome.config import Settings, load_settings
from kakitome.settings_overlay import (
    LiveSettings,
    SettingsInvalid,
    apply_overlay,
    describe,
    validate_changes,
)
from kakitome.store.database import Database
from kakitome.store.settings_store import SettingsStore
from kakitome.tls.policy import TLSLevel

ROUTES = [
    {
        "match": "help@in.example",
        "action": "forward",
        "url": "https://app.example/in",
        "secret": "s3",
    },
    {"match": "*", "action": "reject"},
]


async def test_change_stores_json_values_and_who_changed_them(store: Database) -> None:
    """Values come back as stored (route secrets included), with time and author."""
    overlay = SettingsStore(store.engine)
    await overlay.change({"inbound.routes": ROUTES, "queue.retry_first": 60.0}, now=10.0, by="ann")
    entries = await overlay.entries()
    assert entries["inbound.routes"].value == ROUTES
    assert entries["queue.retry_first"].value == 60.0
    assert (entries["queue.retry_first"].updated_at, entries["queue.retry_first"].updated_by) == (
        10.0,
        "ann",
    )


async def test_change_replaces_and_removes_in_one_transaction(store: Database) -> None:
    """A later change replaces a key's value and removes others; a failing change keeps
    what was there."""
    overlay = SettingsStore(store.engine)
    await overlay.change({"queue.retry_first": 60.0, "tls.policy": {"a.example": "verify"}}, now=1)
    await overlay.change({"queue.retry_first": 90.0}, ["tls.policy"], now=2, by="bob")
    assert await overlay.values() == {"queue.retry_first": 90.0}
    assert (await overlay.entries())["queue.retry_first"].updated_by == "bob"
    with pytest.raises(StatementError):  # not JSON: refused before anything commits
        await overlay.change({"queue.retry_max": 10.0, "queue.lifetime": object()}, now=3)
    assert await overlay.values() == {"queue.retry_first": 90.0}


async def test_overlay_wins_over_file_but_not_over_environment(store: Database) -> None:
    """Precedence: environment > database > file > defaults, and each key says which."""
    settings = load_settings(
        environ={"KAKITOME_INBOUND__DOMAINS": "env.example", "KAKITOME_QUEUE__RETRY_MAX": "600"}
    )
    overlay = SettingsStore(store.engine)
    await overlay.change(
        {"inbound.domains": ["db.example"], "queue.retry_max": 900.0, "queue.retry_first": 5.0},
        now=1,
    )
    entries = await overlay.entries()
    effective = apply_overlay(settings, await overlay.values())
    assert effective.inbound.domains == ("env.example",)
    assert effective.queue.retry_max == 600.0
    assert effective.queue.retry_first == 5.0
    sources = {v.key: v.source for v in describe(effective, entries)}
    assert sources["inbound.domains"] == "environment"
    assert sources["queue.retry_first"] == "database"
    assert sources["queue.retry_factor"] == "default"
    editable = {v.key: v.editable for v in describe(effective, entries)}
    assert editable["queue.retry_first"] and not editable["inbound.domains"]
    assert not editable["database.url"]


async def test_live_settings_reload_and_tell_subscribers(store: Database) -> None:
    """A change in the database reaches a running process's settings at the next refresh;
    removing it brings the file's value back."""
    base = Settings.model_validate({"tls": {"policy": {"file.example": "encrypt"}}})
    overlay = SettingsStore(store.engine)
    live = LiveSettings(base, overlay, interval=0.05)
    seen: list[Settings] = []
    live.subscribe(seen.append)
    assert await live.refresh()
    assert live.current.tls.policy == {"file.example": TLSLevel.ENCRYPT}
    await overlay.change({"tls.policy": {"db.example": "verify"}}, now=1)
    assert await live.refresh()
    assert live.current.tls.policy == {"db.example": TLSLevel.VERIFY}
    assert not await live.refresh()  # nothing new
    await overlay.change({}, ["tls.policy"], now=2)
    assert await live.refresh()
    assert live.current.tls.policy == {"file.example": TLSLevel.ENCRYPT}
    assert [s.tls.policy for s in seen][-2:] == [
        {"db.example": TLSLevel.VERIFY},
        {"file.example": TLSLevel.ENCRYPT},
    ]


async def test_stored_value_that_no_longer_validates_is_skipped(store: Database) -> None:
    """A bad row (written by hand or by an older version) does not stop the process: the
    key keeps its file value, the other keys apply."""
    overlay = SettingsStore(store.engine)
    await overlay.change({"queue.retry_first": -5, "queue.retry_max": 60.0}, now=1)
    effective = apply_overlay(Settings(), await overlay.values())
    assert effective.queue.retry_first == Settings().queue.retry_first
    assert effective.queue.retry_max == 60.0


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"queue.retry_first": -1}, "greater_than_equal"),
        ({"tls.default_level": "sometimes"}, "enum"),
        ({"database.url": "sqlite:///elsewhere.db"}, "not_editable"),
        ({"inbound.routes": [{"match": "a@b.example", "action": "forward"}]}, "route_url"),
        ({"inbound.routes": [{"match": "a b", "action": "hold"}]}, "route_match"),
        (
            {
                "inbound.routes": [
                    {"match": "Support@Example.jp", "action": "hold"},
                    {"match": "support@example.jp ", "action": "reject"},
                ]
            },
            "route_duplicate",
        ),
        ({"inbound.routes": [{"match": "*", "action": "drop"}]}, "string_pattern_mismatch"),
    ],
)
async def test_invalid_changes_are_refused_before_storing(
    store: Database, changes: dict[str, Any], kind: str
) -> None:
    """validate_changes names the problem; a caller that stores only what it returns
    stores nothing."""
    overlay = SettingsStore(store.engine)
    with pytest.raises(SettingsInvalid) as refused:
        await overlay.change(validate_changes(Settings(), changes), now=1)
    assert [p.kind for p in refused.value.problems] == [kind]
    assert await overlay.values() == {}
