"""`kakitome check --list NAME`: the TLS-readiness report over a stored list's subscribed
addresses (the local internet answers DNS and SMTP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kakitome.cli.main import app
from kakitome.testing import LocalInternet, PeerBehaviour


def test_check_stored_list(
    world: LocalInternet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Subscribed members are counted per domain and checked; unsubscribed members are
    left out; an unknown list exits 1, --list with a DOMAIN exits 2."""
    good = world.add_peer()
    plain = world.add_peer(behaviour=PeerBehaviour(starttls=False))
    try:
        tls_domain = world.add_domain(world.unique_domain("lst"), mx=[(10, good)]).name
        plain_domain = world.add_domain(world.unique_domain("lst"), mx=[(10, plain)]).name
        env = {
            **world.env(),
            "KAKITOME_CHECKER__PORT": str(world.port),
            "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "var"),
            "KAKITOME_DATABASE__URL": f"sqlite:///{tmp_path / 'db' / 'kakitome.db'}",
            "KAKITOME_LISTS__TOKEN_SECRET": "0123456789abcdef0123",
        }
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("KAKITOME_CONFIG", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        runner = CliRunner()

        def ok(*args: str) -> dict[str, object]:
            result = runner.invoke(app, [*args, "--json"])
            assert result.exit_code == 0, (result.stdout, result.stderr)
            return dict(json.loads(result.stdout))

        ok("list", "create", "news", "--opt-in", "single")
        members = tmp_path / "members.csv"
        members.write_text(
            "email\n"
            + "".join(f"u{i}@{tls_domain}\n" for i in range(3))
            + f"p@{plain_domain}\n"
            + "gone@missing-domain.test\n",
            encoding="utf-8",
        )
        ok("subscriber", "import", str(members), "--list", "news")
        ok("subscriber", "remove", "gone@missing-domain.test", "--list", "news")

        report = ok("check", "--list", "news", "--no-cache")
        assert report["list"] == {"id": 1, "name": "news"}
        assert report["recipients"] == 4 and report["domains"] == 2
        transport = report["transport"]
        assert isinstance(transport, dict)
        assert transport["verified"]["recipients"] == 3
        assert transport["plaintext"]["recipients"] == 1
        assert transport["undeliverable"]["recipients"] == 0  # the unsubscribed one

        text = runner.invoke(app, ["check", "--list", "news", "--no-cache"])
        assert text.exit_code == 0 and "4" in text.stdout and plain_domain in text.stdout

        missing = runner.invoke(app, ["check", "--list", "nope", "--json"])
        assert missing.exit_code == 1
        assert json.loads(missing.stdout)["error"]["code"] == "not_found"
        both = runner.invoke(app, ["check", tls_domain, "--list", "news", "--json"])
        assert both.exit_code == 2 and "error" in json.loads(both.stdout)
    finally:
        world.remove_peer(good)
        world.remove_peer(plain)
