"""Tests: ``kakitome policy explain`` and the REQUIRETLS flag of ``send``."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kakitome.cli.main import app
from kakitome.testing import LocalInternet
from kakitome.testing.https import add_mta_sts_host, mta_sts_policy
from tests.fixtures_world import MakeDomain
from tests.tls.conftest import peer_tlsa, publish_dane


def _runner(world: LocalInternet, tmp_path: Path) -> CliRunner:
    return CliRunner(
        env={
            **world.env(),
            "KAKITOME_DATABASE__URL": f"sqlite:///{tmp_path / 'k.db'}",
            "KAKITOME_MTA_STS__HTTPS_PORT": str(world.https_server().port),
            # The flag is under test, not signing: unsigned mail from sender.test is allowed.
            "KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM": "true",
        }
    )


def test_policy_explain_json(world: LocalInternet, make_domain: MakeDomain, tmp_path: Path) -> None:
    """T8, T25: policy explain names, per MX, the level and the source of each part:
    DANE for the MX with TLSA, MTA-STS found for the domain."""
    domain, peer = make_domain()
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", [domain.mx[0][1]]))
    publish_dane(world, domain, [(3, 1, 1, peer_tlsa(peer))])
    result = _runner(world, tmp_path).invoke(app, ["policy", "explain", domain.name, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["mta_sts"]["mode"] == "enforce"
    [host] = document["hosts"]
    assert host["mx_host"] == domain.mx[0][1]
    assert host["level"] == "dane" and host["source"] == "dane" and host["secure"]
    sources = {part["source"] for part in host["explanation"]}
    assert {"default", "mta-sts", "dane"} <= sources


def test_policy_explain_table(
    world: LocalInternet, make_domain: MakeDomain, tmp_path: Path
) -> None:
    """T8: the human form prints the MX, its level and source."""
    domain, _ = make_domain()
    add_mta_sts_host(world, domain.name, mta_sts_policy("enforce", ["mx.elsewhere.test"]))
    result = _runner(world, tmp_path).invoke(app, ["policy", "explain", domain.name])
    assert result.exit_code == 0, result.output
    assert domain.mx[0][1] in result.stdout and "mta-sts" in result.stdout
    assert "skipped" in result.stdout


def test_send_requiretls_flag(world: LocalInternet, tmp_path: Path) -> None:
    """T29: send --requiretls stores the message flagged REQUIRETLS."""
    runner = _runner(world, tmp_path)
    result = runner.invoke(
        app,
        [
            "send",
            "--from",
            "a@sender.test",
            "--to",
            "b@x.test",
            "--text",
            "hi",
            "--requiretls",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    message_id = json.loads(result.stdout)["id"]
    import sqlite3

    with sqlite3.connect(tmp_path / "k.db") as db:
        [(flag,)] = db.execute("SELECT requiretls FROM messages WHERE id = ?", (message_id,))
    assert flag == 1


def test_policy_explain_sees_a_policy_changed_in_the_ui(
    world: LocalInternet, make_domain: MakeDomain, tmp_path: Path
) -> None:
    """The CLI reads the settings the service runs with: a tls.policy entry stored in the
    database (as the UI and PATCH /api/v1/settings do) shows as the table's level."""
    import asyncio

    from kakitome.store.database import Database
    from kakitome.store.settings_store import SettingsStore

    domain, _ = make_domain()
    runner = _runner(world, tmp_path)

    async def change() -> None:
        store = await Database.open(f"sqlite:///{tmp_path / 'k.db'}")
        try:
            await SettingsStore(store.engine).change({"tls.policy": {domain.name: "secure"}}, now=1)
        finally:
            await store.close()

    asyncio.run(change())
    result = runner.invoke(app, ["policy", "explain", domain.name, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["base"] == {"level": "secure", "source": "table"}
