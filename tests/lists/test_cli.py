"""``kakitome list|subscriber|segment``: --json documents, exit codes, CSV import with a
mapping and Shift_JIS, the rejected-row report, export, add/remove, segments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kakitome.cli.lists import parse_map
from kakitome.cli.main import app
from kakitome.errors import InputError


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no stray ./kakitome.toml
    monkeypatch.delenv("KAKITOME_CONFIG", raising=False)
    return CliRunner(
        env={
            "KAKITOME_DATABASE__URL": f"sqlite:///{tmp_path / 'var' / 'kakitome.db'}",
            "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "data"),
            "KAKITOME_LISTS__TOKEN_SECRET": "0123456789abcdef0123",
            "KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM": "true",
        }
    )


def run_json(runner: CliRunner, *args: str, code: int = 0) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return json.loads(result.stdout)  # exactly one JSON document, nothing else


def make_list(runner: CliRunner, name: str = "news", *extra: str) -> dict[str, Any]:
    doc = run_json(
        runner,
        "list",
        "create",
        name,
        "--title",
        "テスト通信",
        "--opt-in",
        "single",
        "--from-address",
        "news@example.jp",
        "--mail-domain",
        "lists.example.jp",
        *extra,
    )
    return dict(doc["list"])


def test_list_create_list_show_remove(runner: CliRunner) -> None:
    """The list life cycle, every step with one JSON document."""
    created = make_list(runner)
    assert created["name"] == "news" and created["address"] == "news@lists.example.jp"
    lists = run_json(runner, "list", "list")["lists"]
    assert [row["name"] for row in lists] == ["news"]
    assert lists[0]["members"]["subscribed"] == 0
    shown = run_json(runner, "list", "show", "news")
    assert shown["list"]["id"] == created["id"] and shown["audience"] == 0
    assert run_json(runner, "list", "remove", "news")["removed"] == "news"
    assert run_json(runner, "list", "list")["lists"] == []


def test_errors_and_exit_codes(runner: CliRunner) -> None:
    """Bad input exits 2, an unknown list 1, each with an error document."""
    bad = run_json(runner, "list", "create", "Bad Name", code=2)
    assert bad["error"]["code"] == "invalid_input"
    missing = run_json(runner, "list", "show", "nope", code=1)
    assert missing["error"]["code"] == "not_found"
    make_list(runner)
    dup = run_json(runner, "list", "create", "news", code=2)
    assert "exists" in dup["error"]["message"]
    assert run_json(runner, "subscriber", "list", "--list", "nope", code=1)["error"]
    enc = run_json(
        runner, "subscriber", "import", "x.csv", "--list", "news", "--encoding", "latin-9", code=2
    )
    assert enc["error"]["code"] == "invalid_input"
    nofile = run_json(runner, "subscriber", "import", "missing.csv", "--list", "news", code=2)
    assert "no such file" in nofile["error"]["message"]


def test_import_shift_jis_with_map_and_rejected_rows(runner: CliRunner, tmp_path: Path) -> None:
    """A CP932 file with Japanese headers mapped by --map; broken and duplicate rows are
    reported with their line numbers; an unsubscribed member stays unsubscribed."""
    make_list(runner)
    csv_text = (
        "メール,氏名,種別,メモ\r\n"
        "yamada@example.jp,山田 太郎,ゴールド,秘密\r\n"
        "not-an-address,佐藤,一般,\r\n"
        "YAMADA@example.jp,山田 重複,一般,\r\n"
        ",空,一般,\r\n"
        "takahashi@example.jp,髙橋 ①,一般,\r\n"
    )
    path = tmp_path / "members.csv"
    path.write_bytes(csv_text.encode("cp932"))
    report = run_json(
        runner,
        "subscriber",
        "import",
        str(path),
        "--list",
        "news",
        "--encoding",
        "shift_jis",
        "--map",
        "email=メール,name=氏名,attr.plan=種別",
        "--map",
        "-=メモ",
    )
    assert report["encoding"] == "cp932" and report["rows"] == 5
    assert report["inserted"] == 2 and report["duplicates"] == 1
    rejected = {row["line"]: row["reason"] for row in report["rejected"]}
    assert set(rejected) == {3, 4, 5}
    assert rejected[3].startswith("invalid address")
    assert rejected[4].startswith("duplicate")
    assert rejected[5] == "no address in the email column"
    members = run_json(runner, "subscriber", "list", "--list", "news")["members"]
    by_address = {m["subscriber"]["address"]: m for m in members}
    assert by_address["takahashi@example.jp"]["subscriber"]["name"] == "髙橋 ①"
    assert by_address["yamada@example.jp"]["subscriber"]["attributes"] == {"plan": "ゴールド"}
    assert by_address["yamada@example.jp"]["opt_in"]["method"] == "import"

    # Unsubscribe one, import again: no duplicates, still unsubscribed.
    gone = run_json(runner, "subscriber", "remove", "yamada@example.jp", "--list", "news")
    assert gone["action"] == "unsubscribed"
    again = run_json(
        runner, "subscriber", "import", str(path), "--list", "news", "--map", "email=メール"
    )
    assert again["inserted"] == 0
    members = run_json(runner, "subscriber", "list", "--list", "news")["members"]
    assert len(members) == 2
    status = {m["subscriber"]["address"]: m["status"] for m in members}
    assert status["yamada@example.jp"] == "unsubscribed"


def test_import_text_mode_prints_rejected_rows(runner: CliRunner, tmp_path: Path) -> None:
    """Without --json: a summary and the rejected rows with line and reason (exit 0)."""
    make_list(runner)
    path = tmp_path / "m.csv"
    path.write_text("email,name\na@example.jp,A\nbad@@x,B\n", encoding="utf-8")
    result = runner.invoke(app, ["subscriber", "import", str(path), "--list", "news"])
    assert result.exit_code == 0, result.stderr
    assert "1 new subscribers" in result.stdout and "1 rejected" in result.stdout
    assert "3" in result.stdout and "invalid address" in result.stdout


def test_bad_map(runner: CliRunner, tmp_path: Path) -> None:
    """A malformed --map and a column the header lacks: exit 2."""
    make_list(runner)
    path = tmp_path / "m.csv"
    path.write_text("email\na@example.jp\n", encoding="utf-8")
    doc = run_json(
        runner, "subscriber", "import", str(path), "--list", "news", "--map", "x", code=2
    )
    assert "FIELD=COLUMN" in doc["error"]["message"]
    doc = run_json(
        runner, "subscriber", "import", str(path), "--list", "news", "--map", "email=無い", code=2
    )
    assert "無い" in doc["error"]["message"]
    with pytest.raises(InputError):
        parse_map(["phone=電話"])
    assert parse_map(["email=メール, name=氏名", "attr.x=X"]) == {
        "メール": "email",
        "氏名": "name",
        "X": "attr.x",
    }


def test_export_neutralises_formulas(runner: CliRunner, tmp_path: Path) -> None:
    """Export to a file (--json needs -o) and to stdout; '=cmd' cells get an apostrophe."""
    make_list(runner)
    run_json(
        runner,
        "subscriber",
        "add",
        "x@example.jp",
        "--list",
        "news",
        "--name",
        "=cmd|' /C calc'!A0",
        "--attr",
        "plan=gold",
    )
    out = tmp_path / "out.csv"
    doc = run_json(runner, "subscriber", "export", "--list", "news", "-o", str(out))
    assert doc["rows"] == 1
    text = out.read_text(encoding="utf-8-sig")
    assert "'=cmd" in text and "plan" in text.splitlines()[0]
    assert run_json(runner, "subscriber", "export", "--list", "news", code=2)["error"]
    result = runner.invoke(app, ["subscriber", "export", "--list", "news", "--encoding", "utf-8"])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1].startswith("x@example.jp,'=cmd")


def test_add_double_opt_in_queues_confirmation(runner: CliRunner) -> None:
    """On a double opt-in list, add leaves the member unconfirmed and queues the mail;
    --confirmed subscribes at once; remove --delete removes the membership."""
    run_json(
        runner,
        "list",
        "create",
        "dbl",
        "--opt-in",
        "double",
        "--from-address",
        "news@example.jp",
    )
    member = run_json(runner, "subscriber", "add", "p@example.jp", "--list", "dbl")["member"]
    assert member["status"] == "unconfirmed" and member["opt_in"]["method"] == "cli"
    queue = json.loads(runner.invoke(app, ["queue", "list", "--json"]).stdout)["deliveries"]
    assert [d["address"] for d in queue] == ["p@example.jp"]
    member = run_json(runner, "subscriber", "add", "q@example.jp", "--list", "dbl", "--confirmed")[
        "member"
    ]
    assert member["status"] == "subscribed"
    bad = run_json(runner, "subscriber", "add", "not an address", "--list", "dbl", code=2)
    assert bad["error"]["code"] == "invalid_address"
    gone = run_json(runner, "subscriber", "remove", "q@example.jp", "--list", "dbl", "--delete")
    assert gone["action"] == "deleted"
    run_json(runner, "subscriber", "remove", "q@example.jp", "--list", "dbl", "--delete", code=1)


def test_segments(runner: CliRunner, tmp_path: Path) -> None:
    """segment create/list/show/test/remove; a bad expression exits 2 with its position."""
    make_list(runner)
    path = tmp_path / "m.csv"
    path.write_text(
        "email,name,plan\na@example.jp,A,gold\nb@example.jp,B,free\nc@example.jp,C,gold\n",
        encoding="utf-8",
    )
    run_json(runner, "subscriber", "import", str(path), "--list", "news")
    tested = run_json(runner, "segment", "test", "--list", "news", 'attr.plan = "gold"')
    assert tested["audience"] == 2 and tested["sample"] == ["a@example.jp", "c@example.jp"]
    saved = run_json(runner, "segment", "create", "gold", 'attr.plan = "gold"', "--list", "news")
    assert saved["segment"]["name"] == "gold"
    assert [s["name"] for s in run_json(runner, "segment", "list")["segments"]] == ["gold"]
    shown = run_json(runner, "segment", "show", "gold")
    assert shown["audience"] == 2
    by_name = run_json(runner, "segment", "test", "--list", "news", "--segment", "gold")
    assert by_name["audience"] == 2
    bad = run_json(runner, "segment", "create", "bad", 'attr.plan = = "x"', code=2)
    assert bad["error"]["code"] == "invalid_input"
    assert run_json(runner, "segment", "test", "--list", "news", code=2)["error"]
    assert run_json(runner, "segment", "remove", "gold")["removed"] == "gold"
    assert run_json(runner, "segment", "show", "gold", code=1)["error"]["code"] == "not_found"
