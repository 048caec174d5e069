"""Bad input and key protection: names that are not domains, IDN in both forms, unreadable
key files and secrets, duplicates — each a clear error with nothing half-created; private
keys are sealed at rest and never printed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from kakitome.auth.dkim_keys import DKIMKeyError, generate_key_pair
from kakitome.cli.main import app
from kakitome.config import load_settings
from kakitome.domains.keybox import KeyBox, KeyBoxError
from kakitome.domains.names import DomainNameError, parse_domain_name
from kakitome.domains.service import DomainService
from kakitome.domains.signing import DomainSigning
from kakitome.errors import InputError, NotFound
from kakitome.store.database import Database
from kakitome.store.schema_domains import dkim_keys, sending_domains
from tests.domains.conftest import Env


@pytest.mark.parametrize(
    "text",
    ["", "   ", "user@example.com", "exa mple.com", "localhost", "192.0.2.1",
     "https://example.com/", "-bad-.example", "a..example", "[192.0.2.1]", "x" * 64 + ".com"],
)  # fmt: skip
def test_names_that_are_not_domains(text: str) -> None:
    """Addresses, URLs, IPs, single labels and malformed names → DomainNameError."""
    with pytest.raises(DomainNameError):
        parse_domain_name(text)


def test_idn_in_both_forms() -> None:
    """An IDN is accepted and kept as A-labels and U-labels."""
    name = parse_domain_name("例え.JP.")
    assert (name.ascii, name.unicode) == ("xn--r8jz45g.jp", "例え.jp")
    assert parse_domain_name("xn--r8jz45g.jp") == name
    assert name.display() == "例え.jp (xn--r8jz45g.jp)"


async def _counts(store: Database) -> tuple[int, int]:
    async with store.engine.connect() as conn:
        domains = len((await conn.execute(select(sending_domains.c.id))).all())
        keys = len((await conn.execute(select(dkim_keys.c.id))).all())
    return domains, keys


async def test_bad_name_creates_nothing(service: DomainService, domain_store: Database) -> None:
    """A bad name is refused before any key is made or row written."""
    with pytest.raises(DomainNameError):
        await service.add("not a domain")
    assert await _counts(domain_store) == (0, 0)


async def test_idn_domain_added_and_shown_in_both_forms(
    service: DomainService, domain_env: Env
) -> None:
    """An IDN sending domain is stored by its A-labels, found by either form, shown in both."""
    view = (await service.add("書留テスト.jp")).to_dict()
    assert view["domain"] == "xn--zckzah9956c49o.jp" and view["unicode"] == "書留テスト.jp"
    assert (await service.show("xn--zckzah9956c49o.jp")).to_dict()["unicode"] == "書留テスト.jp"
    records = (await service.records("書留テスト.jp")).to_dict()
    assert "書留テスト.jp (xn--zckzah9956c49o.jp)" in records["zone_file"]
    assert all(r["name"].isascii() for r in records["records"])


async def test_duplicate_and_unknown_domains(service: DomainService, domain_env: Env) -> None:
    """Adding a domain twice is refused; unknown domains are NotFound."""
    await service.add(domain_env.domain)
    with pytest.raises(InputError, match="already"):
        await service.add(domain_env.domain.upper())
    with pytest.raises(NotFound):
        await service.show("unknown.example")
    with pytest.raises(NotFound):
        await service.remove("unknown.example")


async def test_unreadable_secret_file_creates_nothing(
    domain_store: Database, domain_env: Env, tmp_path: Path
) -> None:
    """A key_file that cannot be read → KeyBoxError naming it; nothing is stored."""
    settings = load_settings(
        environ={**domain_env.env, "KAKITOME_DOMAINS__KEY_FILE": str(tmp_path / "nope.key")}
    )
    with pytest.raises(KeyBoxError, match=r"nope\.key"):
        await DomainService(domain_store, settings).add(domain_env.domain)
    assert await _counts(domain_store) == (0, 0)


async def test_unreadable_imported_key_creates_nothing(
    service: DomainService, domain_store: Database, domain_env: Env, tmp_path: Path
) -> None:
    """--rsa-key with a missing file, or a key of the wrong type → a clear error, nothing stored."""
    with pytest.raises(DKIMKeyError, match="cannot read"):
        await service.add(domain_env.domain, rsa_key_file=tmp_path / "missing.pem")
    ed = tmp_path / "ed.pem"
    ed.write_bytes(generate_key_pair("ed25519", __import__("datetime").date.today()).private_pem())
    with pytest.raises(InputError, match="not a rsa key"):
        await service.add(domain_env.domain, rsa_key_file=ed)
    assert await _counts(domain_store) == (0, 0)
    view = await service.add(domain_env.domain, ed25519_key_file=ed)
    assert len(view.row.keys) == 2


async def test_keys_are_sealed_at_rest(
    service: DomainService, domain_store: Database, domain_env: Env
) -> None:
    """Stored private keys are ciphertext, open only with the right secret, never plain PEM."""
    await service.add(domain_env.domain)
    async with domain_store.engine.connect() as conn:
        sealed = (await conn.execute(select(dkim_keys.c.private_key))).scalars().all()
    assert all(s.startswith("kb1:") and "PRIVATE" not in s for s in sealed)
    other = Path(domain_env.env["KAKITOME_DOMAINS__KEY_FILE"]).with_name("other.key")
    other.write_text("another secret of enough length\n")
    wrong = load_settings(environ={**domain_env.env, "KAKITOME_DOMAINS__KEY_FILE": str(other)})
    with pytest.raises(KeyBoxError, match="does not open"):
        await DomainSigning.load(domain_store, wrong)


def test_generated_secret_file_is_0600(tmp_path: Path) -> None:
    """Without a configured secret, one is made in the data directory with mode 0600."""
    settings = load_settings(environ={"KAKITOME_PATHS__DATA_DIR": str(tmp_path / "var")})
    box = KeyBox.from_settings(settings)
    path = tmp_path / "var" / "domain-keys.secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    sealed = box.seal(b"pem", domain="example.com", selector="s1")
    assert (
        KeyBox.from_settings(settings).open(sealed, domain="example.com", selector="s1") == b"pem"
    )
    with pytest.raises(KeyBoxError):  # bound to its row
        box.open(sealed, domain="example.com", selector="s2")
    assert path.read_text().strip() not in repr(box)


def _cli(env: Env, url: str, *args: str, code: int = 0) -> Any:
    runner = CliRunner(env={**env.world.env(), **env.env, "KAKITOME_DATABASE__URL": url})
    result = runner.invoke(app, ["domain", *args, "--json"])
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "PRIVATE KEY" not in result.stdout and "kb1:" not in result.stdout
    return json.loads(result.stdout)


def test_cli_domain_commands(
    domain_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kakitome domain` add/dns/list/show/verify/rotate-dkim/remove print one JSON
    document each, with exit codes 0/1/2 and no private key anywhere."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    added = _cli(domain_env, url, "add", domain_env.domain)
    assert len(added["domain"]["signing_selectors"]) == 2
    printed = _cli(domain_env, url, "dns", domain_env.domain)
    assert printed["records"] == added["dns"]["records"]
    domain_env.publish(printed)
    verified = _cli(domain_env, url, "verify", domain_env.domain)
    assert verified["state"] == "verified"
    assert [d["domain"] for d in _cli(domain_env, url, "list")["domains"]] == [domain_env.domain]
    assert _cli(domain_env, url, "show", domain_env.domain)["state"] == "verified"
    rotated = _cli(domain_env, url, "rotate-dkim", domain_env.domain)
    assert sum(k["state"] == "pending" for k in rotated["domain"]["keys"]) == 2
    assert _cli(domain_env, url, "add", "not a domain", code=2)["error"]["code"] == "invalid_input"
    assert _cli(domain_env, url, "show", "unknown.example", code=1)["error"]["code"] == "not_found"
    assert _cli(domain_env, url, "remove", domain_env.domain) == {"removed": domain_env.domain}
    assert _cli(domain_env, url, "list")["domains"] == []


def test_cli_verify_dns_timeout(
    domain_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`domain verify` when DNS does not answer: exit 1 with a clear message."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    _cli(domain_env, url, "add", domain_env.domain)
    domain_env.world.dns.set_hang(domain_env.domain)
    try:
        error = _cli(domain_env, url, "verify", domain_env.domain, code=1)["error"]
    finally:
        domain_env.world.dns.set_hang(domain_env.domain, False)
    assert "DNS did not answer" in error["message"]
