"""The kakitome command: --json output, exit codes, queue actions, API keys."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from kakitome.cli.main import app
from kakitome.config import load_settings
from kakitome.services import Services, open_services
from tests.receipts import PLAINTEXT_REASON, deliver_due_in_plaintext

if TYPE_CHECKING:
    from kakitome.queue.store import QueueStore


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'kakitome.db'}"


@pytest.fixture
def runner(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no stray ./kakitome.toml
    monkeypatch.delenv("KAKITOME_CONFIG", raising=False)
    # These tests are about the command line, not signing: unsigned mail from domains
    # that are not configured is allowed (test_send_signs_* below covers signing).
    return CliRunner(
        env={"KAKITOME_DATABASE__URL": db_url, "KAKITOME_DOMAINS__ALLOW_UNCONFIGURED_FROM": "true"}
    )


def _json(runner: CliRunner, *args: str, code: int = 0) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return json.loads(result.stdout)  # exactly one JSON document, nothing else


def _with_services(url: str, fn: Any, **env: str) -> Any:
    """``fn(services)`` on the services the CLI runs on (the same database, and the same
    data directory for the DKIM key secret: the environment the CLI runner sees)."""

    async def go() -> Any:
        settings = load_settings(environ={**os.environ, "KAKITOME_DATABASE__URL": url, **env})
        services = await open_services(settings)
        try:
            return await fn(services)
        finally:
            await services.close()

    return asyncio.run(go())


def test_send_json_prints_one_document(runner: CliRunner, db_url: str) -> None:
    """send --json prints one JSON document with the id; the message is queued."""
    doc = _json(
        runner, "send", "--from", "書留 <info@example.jp>", "--to", "a@example.com",
        "--to", "b@example.com", "--bcc", "c@example.com", "--subject", "お知らせ",
        "--text", "本文", "--header", "X-Campaign: spring",
    )  # fmt: skip
    assert set(doc) == {"id", "recipients"} and doc["recipients"] == 3
    receipt = _json(runner, "receipt", doc["id"])
    assert receipt["subject"] == "お知らせ"
    assert sorted(r["address"] for r in receipt["recipients"]) == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]
    assert all(r["status"] == "queued" for r in receipt["recipients"])


def test_send_files_and_raw(runner: CliRunner, tmp_path: Path, db_url: str) -> None:
    """--text @file, --attach and --raw read files; raw uses --to as the envelope."""
    body = tmp_path / "body.txt"
    body.write_text("ファイルの本文\n", encoding="utf-8")
    attachment = tmp_path / "report.csv"
    attachment.write_bytes(b"a,b\n1,2\n")
    doc = _json(
        runner, "send", "--from", "info@example.jp", "--to", "a@example.com",
        "--text", f"@{body}", "--attach", str(attachment),
    )  # fmt: skip
    batches = _with_services(
        db_url, lambda s: s.queue.claim_due("t", now=time.time() + 1, limit=10, lease_seconds=60)
    )
    content = batches[0].messages[0].content
    assert b'filename="report.csv"' in content and b"text/csv" in content
    raw = tmp_path / "raw.eml"
    raw.write_bytes(b"From: info@example.jp\nTo: header@example.com\n\nraw body\n")
    doc = _json(runner, "send", "--raw", str(raw), "--to", "envelope@example.net")
    rows = _with_services(db_url, lambda s: s.queue.list_deliveries(message_id=doc["id"]))
    assert [r.recipient for r in rows] == ["envelope@example.net"]


def test_send_bad_input_exit_2(runner: CliRunner, db_url: str) -> None:
    """Bad input: exit 2, plain words on stderr, a JSON error on stdout, nothing queued."""
    result = runner.invoke(
        app, ["send", "--from", "info@example.jp", "--to", "a..b@example.com", "--text", "x",
              "--json"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "a..b" in result.stderr
    assert json.loads(result.stdout)["error"]["code"] == "invalid_address"
    result = runner.invoke(
        app, ["send", "--from", "info@example.jp", "--to", "a@example.com",
              "--subject", "x\r\nBcc: v@example.com", "--json"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "line break" in result.stderr
    assert _with_services(db_url, lambda s: s.queue.list_deliveries()) == []


def test_receipt_unknown_id_exit_1(runner: CliRunner) -> None:
    """An unknown id is exit 1 with a JSON error and a plain message on stderr."""
    doc = _json(runner, "receipt", "no-such-id", code=1)
    assert doc["error"]["code"] == "not_found"


def test_queue_list_hold_release(runner: CliRunner) -> None:
    """queue hold moves a message's deliveries to held, release brings them back."""
    first = _json(runner, "send", "--from", "i@example.jp", "--to", "a@one.test", "--text", "x")
    _json(runner, "send", "--from", "i@example.jp", "--to", "b@two.test", "--text", "x")
    listed = _json(runner, "queue", "list")["deliveries"]
    assert len(listed) == 2 and {d["status"] for d in listed} == {"queued"}
    assert _json(runner, "queue", "hold", first["id"]) == {"action": "hold", "count": 1}
    held = _json(runner, "queue", "list", "--status", "held")["deliveries"]
    assert [d["message_id"] for d in held] == [first["id"]]
    assert _json(runner, "queue", "hold", "--domain", "two.test")["count"] == 1
    assert _json(runner, "queue", "release", "--all")["count"] == 2
    assert _json(runner, "queue", "list", "--status", "held")["deliveries"] == []
    shown = _json(runner, "queue", "show", first["id"])
    assert shown["receipt"]["id"] == first["id"] and shown["events"]
    assert _json(runner, "queue", "delete", first["id"])["count"] == 1
    assert len(_json(runner, "queue", "list")["deliveries"]) == 1


def test_queue_action_needs_a_target(runner: CliRunner) -> None:
    """queue hold with no ids, --domain or --all is refused with exit 2."""
    doc = _json(runner, "queue", "hold", code=2)
    assert "--all" in doc["error"]["message"]


def test_apikey_create(runner: CliRunner, db_url: str) -> None:
    """apikey create prints a key that the store accepts, with the asked scopes."""
    doc = _json(runner, "apikey", "create", "ops", "--scope", "read")
    assert doc["key"].startswith("kk_") and doc["scopes"] == ["read"]
    info = _with_services(db_url, lambda s: s.api_keys.check_api_key(doc["key"], now=time.time()))
    assert info is not None and info.scopes == ("read",)
    everything = _json(runner, "apikey", "create", "all")
    assert everything["scopes"] == ["send", "read", "admin"]
    assert _json(runner, "apikey", "create", "x", "--scope", "root", code=2)["error"]


def test_human_output_is_a_table(runner: CliRunner) -> None:
    """Without --json, receipt prints a table for people."""
    doc = _json(runner, "send", "--from", "i@example.jp", "--to", "a@one.test", "--text", "x")
    result = runner.invoke(app, ["receipt", doc["id"]])
    assert result.exit_code == 0
    assert "a@one.test" in result.stdout and "queued" in result.stdout


def test_receipt_says_why_a_delivery_went_in_plaintext(runner: CliRunner, db_url: str) -> None:
    """The human receipt names the rule that allowed plaintext (T43)."""
    doc = _json(runner, "send", "--from", "i@example.jp", "--to", "a@one.test", "--text", "x")

    async def deliver(services: Services) -> None:
        await deliver_due_in_plaintext(services.store)

    _with_services(db_url, deliver)
    result = runner.invoke(app, ["receipt", doc["id"]])
    assert result.exit_code == 0
    flat = " ".join(result.stdout.split())
    assert f"plaintext allowed: {PLAINTEXT_REASON}" in flat, result.stdout


def test_bad_settings_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    """An unreadable settings file is bad input: exit 2."""
    doc = _json(runner, "queue", "list", "--config", str(tmp_path / "missing.toml"), code=2)
    assert doc["error"]["code"] == "invalid_settings"


def test_send_wait_times_out(runner: CliRunner) -> None:
    """send --wait with nobody delivering gives up after --timeout with exit 1."""
    doc = _json(
        runner, "send", "--from", "i@example.jp", "--to", "a@one.test", "--text", "x",
        "--wait", "--timeout", "0.3", code=1,
    )  # fmt: skip
    assert doc["error"]["code"] == "timeout"


def test_send_wait_prints_receipt(runner: CliRunner, db_url: str) -> None:
    """send --wait returns the receipt (with MX, reply and TLS) once delivery is recorded."""
    from kakitome.delivery.types import MXUsed, Outcome, RecipientResult
    from kakitome.queue.schedule import RetrySchedule
    from kakitome.smtp.replies import Reply
    from kakitome.tls.policy import PolicySource, TLSLevel
    from kakitome.tls.receipt import PeerVerification, TLSReceipt

    box: dict[str, Any] = {}

    def invoke() -> None:
        box["result"] = runner.invoke(
            app, ["send", "--from", "i@example.jp", "--to", "a@one.test", "--text", "x",
                  "--wait", "--timeout", "20", "--json"],
        )  # fmt: skip

    async def play_worker(services: Services) -> None:
        store: QueueStore = services.queue
        for _ in range(200):
            batches = await store.claim_due("w", now=time.time() + 1, limit=10, lease_seconds=60)
            if batches:
                break
            await asyncio.sleep(0.05)
        recipient = batches[0].messages[0].recipients[0]
        tls = TLSReceipt(
            used=True, version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384",
            verification=PeerVerification.VERIFIED, level=TLSLevel.MAY,
            policy_source=PolicySource.DEFAULT, peer_certificate_sha256="ab" * 32,
        )  # fmt: skip
        result = RecipientResult(
            recipient.delivery_id, Outcome.DELIVERED, Reply(250, "2.0.0", "queued as X"),
            MXUsed("mx.one.test", "127.0.0.2"), tls,
        )  # fmt: skip
        await store.record_results("w", [result], now=time.time(), schedule=RetrySchedule())

    thread = threading.Thread(target=invoke)
    thread.start()
    try:
        _with_services(db_url, play_worker)
    finally:
        thread.join(30)
    result = box["result"]
    assert result.exit_code == 0, (result.stdout, result.stderr)
    receipt = json.loads(result.stdout)
    row = receipt["recipients"][0]
    assert row["status"] == "delivered"
    assert row["mx"] == {"host": "mx.one.test", "ip": "127.0.0.2"}
    assert row["reply"] == {"code": 250, "enhanced": "2.0.0", "text": "queued as X"}
    assert row["tls"]["version"] == "TLSv1.3" and row["tls"]["verified"] is True


def test_send_refuses_unconfigured_from_domain(db_url: str, tmp_path: Path) -> None:
    """By default send refuses a From domain that is not a configured sending domain."""
    strict = CliRunner(env={"KAKITOME_DATABASE__URL": db_url})
    result = strict.invoke(
        app, ["send", "--from", "a@unknown.example", "--to", "b@example.com", "--text", "x",
              "--json"],
    )  # fmt: skip
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert json.loads(result.stdout)["error"]["message"].find("unknown.example") >= 0
    assert not any((_with_services(db_url, lambda s: s.queue.status_counts())).values())


def test_send_signs_mail_of_a_configured_domain(db_url: str, tmp_path: Path) -> None:
    """send signs with the domain's two DKIM keys and uses its VERP return path."""
    strict = CliRunner(env={"KAKITOME_DATABASE__URL": db_url})
    added = strict.invoke(app, ["domain", "add", "shop.example", "--json"])
    assert added.exit_code == 0, (added.stdout, added.stderr)
    doc = _json(strict, "send", "--from", "news@shop.example", "--to", "b@example.com",
                "--subject", "署名", "--text", "x")  # fmt: skip
    batches = _with_services(
        db_url, lambda s: s.queue.claim_due("t", now=time.time() + 1, limit=10, lease_seconds=60)
    )
    message = batches[0].messages[0]
    assert message.message_id == doc["id"]
    assert message.content.count(b"DKIM-Signature:") == 2
    assert b"a=rsa-sha256" in message.content and b"a=ed25519-sha256" in message.content
    assert message.sender.startswith("bounce+") and message.sender.endswith("@bounce.shop.example")


def test_confirmation_queued_by_the_cli_is_signed_with_a_verp_return_path(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The double opt-in confirmation `subscriber add` queues for a list whose From domain
    was added with `domain add` carries both DKIM signatures, which dkimpy verifies with
    the printed records, and a VERP envelope sender: the list commands run on the
    service's one injector, not one of their own without the signer."""
    import dkim

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KAKITOME_CONFIG", raising=False)
    env = {
        "KAKITOME_DATABASE__URL": db_url,
        "KAKITOME_PATHS__DATA_DIR": str(tmp_path / "data"),
        "KAKITOME_LISTS__TOKEN_SECRET": "0123456789abcdef0123",
    }
    strict = CliRunner(env=env)  # unconfigured From domains refused, as by default
    added = _json(strict, "domain", "add", "shop.example")
    records = {r["name"]: r["value"] for r in added["dns"]["records"] if r["purpose"] == "dkim"}
    _json(strict, "list", "create", "news", "--title", "お知らせ", "--opt-in", "double",
          "--from-address", "news@shop.example")  # fmt: skip
    member = _json(strict, "subscriber", "add", "p@example.jp", "--list", "news")["member"]
    assert member["status"] == "unconfirmed"

    batches = _with_services(
        db_url, lambda s: s.queue.claim_due("t", now=time.time() + 1, limit=10, lease_seconds=60),
        **env,
    )  # fmt: skip
    message = batches[0].messages[0]
    assert [r.address for r in message.recipients] == ["p@example.jp"]
    content = message.content
    assert content.count(b"DKIM-Signature:") == 2

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode().rstrip("."))
        return value.encode() if value is not None else None

    for index in range(2):
        assert dkim.DKIM(content).verify(idx=index, dnsfunc=dnsfunc), index
    assert message.sender.startswith("bounce+") and message.sender.endswith("@bounce.shop.example")
