"""``kakitome campaign|sequence``: one JSON document per command with --json, exit codes
0/1/2, the campaign life cycle (create, preview, test, schedule, send, pause, resume,
cancel, stats), template errors refused before anything is queued, and sequences with
their steps."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from kakitome.cli.main import app
from kakitome.store.database import Database
from kakitome.store.schema import deliveries


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'kakitome.db'}"


@pytest.fixture
def runner(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no stray ./kakitome.toml
    monkeypatch.delenv("KAKITOME_CONFIG", raising=False)
    return CliRunner(
        env={
            "KAKITOME_DATABASE__URL": db_url,
            "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "data"),
            "KAKITOME_HTTP__PUBLIC_URL": "https://news.example.jp",
            "KAKITOME_LISTS__TOKEN_SECRET": "0123456789abcdef0123",
            "KAKITOME_CAMPAIGNS__LINK_SECRET": "campaign-link-secret-0123456789",
            "KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM": "true",
        }
    )


def run_json(runner: CliRunner, *args: str, code: int = 0) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return json.loads(result.stdout)  # exactly one JSON document, nothing else


def queued(db_url: str) -> int:
    async def count() -> int:
        store = await Database.open(db_url, pool_size=1)
        try:
            async with store.engine.connect() as conn:
                return int(
                    (await conn.execute(select(func.count()).select_from(deliveries))).scalar_one()
                )
        finally:
            await store.close()

    return asyncio.run(count())


@pytest.fixture
def news(runner: CliRunner) -> None:
    """A list ``news`` (Tokyo time) with three confirmed subscribers."""
    run_json(
        runner, "list", "create", "news", "--title", "書留通信", "--opt-in", "single",
        "--from-address", "news@example.jp", "--from-name", "書留商店",
        "--organization", "書留商店株式会社", "--postal-address", "東京都千代田区千代田1-1",
        "--mail-domain", "lists.example.jp", "--time-zone", "Asia/Tokyo",
    )  # fmt: skip
    for index, name in enumerate(["山田太郎", "佐藤花子", ""]):
        run_json(
            runner, "subscriber", "add", f"user{index}@example.net", "--list", "news",
            "--name", name, "--confirmed",
        )  # fmt: skip


def create(runner: CliRunner, name: str = "spring", *extra: str, code: int = 0) -> Any:
    return run_json(
        runner, "campaign", "create", name, "--list", "news",
        "--subject", "{{ name | honorific }}へ 春のお知らせ",
        "--body", "# {{ honorific(name) }}\n\n新商品のご案内です。", "--format", "markdown",
        *extra, code=code,
    )  # fmt: skip


def test_campaign_life_cycle(runner: CliRunner, news: None, db_url: str) -> None:
    """create → list/show → preview → test → send → pause → resume → cancel → stats."""
    created = create(runner)["campaign"]
    assert created["status"] == "draft" and created["name"] == "spring"
    assert created["created_at"].endswith("Z")
    assert [c["name"] for c in run_json(runner, "campaign", "list")["campaigns"]] == ["spring"]
    assert run_json(runner, "campaign", "show", "spring")["campaign"]["id"] == created["id"]
    assert run_json(runner, "campaign", "show", str(created["id"]))["campaign"]["name"] == "spring"

    preview = run_json(
        runner, "campaign", "preview", "spring", "--subscriber", "user0@example.net"
    )["preview"]
    assert preview["subject"] == "山田太郎様へ 春のお知らせ"
    assert "山田太郎様" in preview["text"] and "書留商店株式会社" in preview["text"]
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in preview["raw"]
    blank = run_json(runner, "campaign", "preview", "spring")["preview"]
    assert blank["subject"] == "お客様へ 春のお知らせ"
    assert queued(db_url) == 0  # a preview sends nothing

    sent = run_json(runner, "campaign", "test", "spring", "--to", "editor@example.org",
                    "--to", "boss@example.org")["messages"]  # fmt: skip
    assert [m["to"] for m in sent] == ["editor@example.org", "boss@example.org"]
    assert queued(db_url) == 2

    assert run_json(runner, "campaign", "send", "spring")["campaign"]["status"] == "scheduled"
    assert run_json(runner, "campaign", "pause", "spring")["campaign"]["status"] == "paused"
    assert run_json(runner, "campaign", "resume", "spring")["campaign"]["status"] == "scheduled"
    assert run_json(runner, "campaign", "cancel", "spring")["campaign"]["status"] == "cancelled"
    error = run_json(runner, "campaign", "resume", "spring", code=2)["error"]
    assert error["code"] == "invalid_input" and "cancelled" in error["message"]

    stats = run_json(runner, "campaign", "stats", "spring")["stats"]
    assert stats["status"] == "cancelled" and stats["sent"] == 0
    assert {"delivered", "bounced", "opened", "clicked", "verified_tls_share"} <= set(stats)


def test_schedule_reads_a_time_without_zone_in_the_lists_zone(
    runner: CliRunner, news: None
) -> None:
    """配信予約 at 09:00 is 09:00 in Tokyo; an explicit zone is kept."""
    create(runner)
    row = run_json(runner, "campaign", "schedule", "spring", "--at", "2030-04-01T09:00")
    assert row["campaign"]["status"] == "scheduled"
    assert row["campaign"]["scheduled_at"] == "2030-04-01T00:00:00Z"
    create(runner, "summer")
    row = run_json(runner, "campaign", "schedule", "summer", "--at", "2030-07-01T09:00Z")
    assert row["campaign"]["scheduled_at"] == "2030-07-01T09:00:00Z"
    create(runner, "autumn")
    error = run_json(runner, "campaign", "schedule", "autumn", "--at", "tomorrow", code=2)
    assert "ISO 8601" in error["error"]["message"]
    assert datetime(2030, 4, 1, tzinfo=UTC)  # the zone arithmetic above is UTC+9


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ("<p>{{ nickname }}</p>", "nickname"),
        ("<p>{% if name %}</p>", "syntax"),
        ("<p>{{ ''.__class__.__mro__ }}</p>", "not allowed"),
    ],
)
def test_template_errors_exit_2_before_anything_is_queued(
    runner: CliRunner, news: None, db_url: str, body: str, what: str
) -> None:
    """Unknown names, syntax errors and sandbox escapes: exit 2 with a clear message."""
    doc = run_json(
        runner, "campaign", "create", "bad", "--list", "news", "--subject", "件名",
        "--body", body, code=2,
    )  # fmt: skip
    assert what in doc["error"]["message"]
    assert run_json(runner, "campaign", "list")["campaigns"] == []
    assert queued(db_url) == 0


def test_errors_and_exit_codes(runner: CliRunner, news: None, tmp_path: Path) -> None:
    """Unknown campaign: 1 (not_found); bad input: 2; text mode prints no JSON."""
    assert run_json(runner, "campaign", "show", "nope", code=1)["error"]["code"] == "not_found"
    assert run_json(runner, "campaign", "send", "nope", code=1)["error"]["code"] == "not_found"
    doc = run_json(runner, "campaign", "create", "x", "--list", "news", code=2)
    assert "--body" in doc["error"]["message"]
    doc = run_json(runner, "campaign", "create", "x", "--list", "missing", "--body", "b", code=1)
    assert doc["error"]["code"] == "not_found"
    body = tmp_path / "body.md"
    body.write_text("# {{ honorific(name) }}\n\nファイルから\n", encoding="utf-8")
    made = run_json(runner, "campaign", "create", "fromfile", "--list", "news",
                    "--subject", "件名", "--body", f"@{body}", "--format", "markdown")  # fmt: skip
    assert made["campaign"]["body"].startswith("# {{ honorific(name) }}")
    result = runner.invoke(app, ["campaign", "show", "fromfile"])
    assert result.exit_code == 0 and "fromfile" in result.stdout
    assert not result.stdout.lstrip().startswith("{")
    result = runner.invoke(app, ["campaign", "list"])
    assert result.exit_code == 0 and "fromfile" in result.stdout


def test_sequences_and_steps(runner: CliRunner, news: None) -> None:
    """create, add-step, show, update-step (checked first), remove-step, list."""
    sequence = run_json(runner, "sequence", "create", "welcome", "--list", "news")["sequence"]
    assert sequence["status"] == "active" and sequence["name"] == "welcome"
    first = run_json(
        runner, "sequence", "add-step", "welcome", "--delay-days", "0",
        "--subject", "ようこそ {{ name | honorific }}",
        "--body", "<p>ご登録ありがとうございます</p>",
    )["step"]  # fmt: skip
    second = run_json(
        runner, "sequence", "add-step", "welcome", "--delay-days", "3", "--hour", "9",
        "--subject", "3日目のご案内", "--body", "3日目", "--format", "text",
    )["step"]  # fmt: skip
    assert (first["position"], second["position"]) == (1, 2)
    assert second["send_hour"] == 9 and second["body_format"] == "text"

    shown = run_json(runner, "sequence", "show", "welcome")
    assert [s["id"] for s in shown["steps"]] == [first["id"], second["id"]]

    updated = run_json(runner, "sequence", "update-step", str(second["id"]), "--hour", "10",
                       "--subject", "3日目のお知らせ")["step"]  # fmt: skip
    assert updated["send_hour"] == 10 and updated["subject"] == "3日目のお知らせ"
    # A broken edit is refused and leaves the step as it was.
    error = run_json(runner, "sequence", "update-step", str(second["id"]),
                     "--body", "{{ nickname }}", code=2)["error"]  # fmt: skip
    assert "nickname" in error["message"]
    again = run_json(runner, "sequence", "show", "welcome")["steps"][1]
    assert again["body"] == "3日目"
    assert run_json(runner, "sequence", "update-step", str(second["id"]), "--hour", "24",
                    code=2)["error"]["code"] == "invalid_input"  # fmt: skip
    assert run_json(runner, "sequence", "update-step", "999", "--hour", "3",
                    code=1)["error"]["code"] == "not_found"  # fmt: skip
    bad = run_json(runner, "sequence", "add-step", "welcome", "--delay-days", "1",
                   "--subject", "x", "--body", "{% for %}", code=2)  # fmt: skip
    assert "syntax" in bad["error"]["message"]

    assert run_json(runner, "sequence", "remove-step", str(first["id"]))["removed"] == first["id"]
    assert run_json(runner, "sequence", "remove-step", str(first["id"]), code=1)
    listed = run_json(runner, "sequence", "list")["sequences"]
    assert [(s["name"], s["steps"]) for s in listed] == [("welcome", 1)]
    assert run_json(runner, "sequence", "show", "nope", code=1)["error"]["code"] == "not_found"
