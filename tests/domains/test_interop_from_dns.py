"""Issue 3: independent verifiers accept every signature Kakitome makes, with the public
keys taken from the records ``kakitome domain dns --json`` prints — not from the key
objects the library holds.

The path is the user's: ``kakitome domain add shop.example`` and ``kakitome domain dns
shop.example --json`` through the CLI (typer's CliRunner, on a SQLite file), then each
message of a small corpus goes through the one injection path the way ``kakitome send``
does (``DomainSigning.load`` → ``Injector(signer=..., return_path=...)`` → ``submit``),
and the signed content is read back from the store. Three verifiers then check it:

- dkimpy, with a ``dnsfunc`` that answers from the printed TXT values;
- OpenDKIM (``opendkim -t`` with ``Mode v`` and ``TestPublicKeys`` written from the printed
  records — the helpers of ``tests/auth/test_dkim_peers.py``);
- Mail::DKIM (RSA only: Debian's version does not check Ed25519).

Each must pass both signatures (RSA: Mail::DKIM) and fail them after one byte is changed.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import dkim
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from kakitome.cli.main import app
from kakitome.config import load_settings
from kakitome.domains.signing import DomainSigning
from kakitome.injection import Injector
from kakitome.message import Attachment
from kakitome.store.database import Database
from kakitome.store.schema import messages
from tests.auth.conftest import Keys
from tests.auth.test_dkim_peers import mail_dkim_results, opendkim_results
from tests.domains.conftest import Env
from tests.fixtures_db import queue_store

pytestmark = pytest.mark.peers

DOMAIN = "shop.example"
FROM = f"ショップ配信 <news@{DOMAIN}>"
TO = "山田太郎様 <taro@example.jp>"

JAPANESE = (
    "山田太郎様\n\nいつもご利用いただき、ありがとうございます。\n"
    "本日より冬のセールを開催いたします。　全角スペースもそのままです。\n"
    ".この行はドットで始まります\n..二つのドットも\n\n"
    "────────────────\n株式会社ショップ　配信事務局\n"
)
LONG_HEADER = "; ".join(f"campaign-{n}=冬のセール第{n}弾のお知らせ" for n in range(1, 9))


class PrintedKeys:
    """The printed DKIM TXT records in the shape the tests/auth helpers read
    (``txt_records()`` → ``{name: value}``), so they write OpenDKIM's TestPublicKeys file
    and Mail::DKIM's key file from exactly what ``domain dns`` printed."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = records

    def txt_records(self, domain: str = DOMAIN) -> dict[str, str]:
        return dict(self.records)


def _iso2022jp_raw() -> bytes:
    """A raw message as old Japanese clients write it: ISO-2022-JP body (7bit) and an
    ISO-2022-JP encoded-word subject."""
    subject = "=?ISO-2022-JP?B?" + _b64("【重要】冬のセールのご案内".encode("iso-2022-jp")) + "?="
    body = ("山田太郎様\r\n\r\n冬のセールのお知らせです。\r\n.ドットで始まる行\r\n\r\n\r\n").encode(
        "iso-2022-jp"
    )
    return (
        f"From: news@{DOMAIN}\r\nTo: taro@example.jp\r\nSubject: {subject}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=ISO-2022-JP\r\n"
        "Content-Transfer-Encoding: 7bit\r\n\r\n"
    ).encode("ascii") + body


def _utf8_8bit_raw() -> bytes:
    """A raw message with an 8-bit UTF-8 body (dot lines, trailing blank lines) and a
    UTF-8 encoded-word subject."""
    subject = "=?UTF-8?B?" + _b64("冬のセールのご案内".encode()) + "?="
    body = JAPANESE.replace("\n", "\r\n") + "\r\n\r\n"
    return (
        f"From: news@{DOMAIN}\r\nTo: taro@example.jp\r\nSubject: {subject}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode("ascii") + body.encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# (name, how to build it with an Injector): the corpus of the issue.
Build = Callable[[Injector], Any]
CORPUS: list[tuple[str, Build]] = [
    ("japanese-subject-utf8-body", lambda inj: inj.prepare_fields(
        from_=FROM, to=[TO], subject="【重要】冬のセールのご案内：本日より全品20%オフ",
        text=JAPANESE, source="cli",
    )),
    ("utf8-8bit-raw", lambda inj: inj.prepare_raw(
        _utf8_8bit_raw(), sender=None, recipients=["taro@example.jp"], source="cli",
    )),
    ("iso-2022-jp-body", lambda inj: inj.prepare_raw(
        _iso2022jp_raw(), sender=None, recipients=["taro@example.jp"], source="cli",
    )),
    ("multipart-alternative", lambda inj: inj.prepare_fields(
        from_=FROM, to=[TO], subject="HTML とテキスト", text=JAPANESE,
        html="<p>山田太郎様</p>\n<p>.ドットで始まる段落</p>\n", source="cli",
    )),
    ("base64-attachment", lambda inj: inj.prepare_fields(
        from_=FROM, to=[TO], subject="請求書のお知らせ", text="添付をご覧ください。\n",
        attachments=[Attachment("請求書.pdf", "application/pdf", bytes(range(256)) * 40)],
        source="cli",
    )),
    ("dot-line-and-long-folded-header", lambda inj: inj.prepare_fields(
        from_=FROM, to=[TO], subject="x" * 20 + " ドット " + "長い件名です。" * 8,
        text=".\n.leading dot\n..two dots\n", headers={"X-Campaign-Info": LONG_HEADER},
        source="cli",
    )),
]  # fmt: skip
IDS = [name for name, _ in CORPUS]
# What each case must really contain once stored (so the corpus tests what it says).
SHAPE: dict[str, list[bytes]] = {
    "japanese-subject-utf8-body": [b"Subject: =?UTF-8?B?", b"utf-8"],
    "utf8-8bit-raw": [b"Subject: =?UTF-8?B?", b"8bit", b"\r\n.\xe3", b"\r\n\r\n\r\n"],
    "iso-2022-jp-body": [b"=?ISO-2022-JP?B?", b"charset=ISO-2022-JP", b"\x1b$B"],
    "multipart-alternative": [b"multipart/alternative", b"text/html"],
    "base64-attachment": [b"Content-Transfer-Encoding: base64", b"filename"],
    "dot-line-and-long-folded-header": [b"\r\n.\r\n.leading dot", b"X-Campaign-Info: =?"],
}


@pytest.fixture
def opendkim(opendkim_bin: str) -> str:
    """``opendkim`` itself: the peer fixture may find ``opendkim-testmsg`` first, but
    ``-t FILE`` with a config file is the daemon's test mode."""
    beside = Path(opendkim_bin).with_name("opendkim")
    found = str(beside) if beside.exists() else shutil.which("opendkim")
    if found is None:  # pragma: no cover - opendkim-tools without opendkim
        pytest.skip("opendkim (the daemon, for -t) not found")
    return found


def _cli(runner: CliRunner, *args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


@pytest.fixture
def printed(domain_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """`kakitome domain add shop.example` then `kakitome domain dns shop.example --json`
    on a SQLite file; returns the settings environment and the two DKIM records printed."""
    monkeypatch.chdir(tmp_path)
    environ = {
        **domain_env.world.env(),
        **domain_env.env,
        "KAKITOME_DATABASE__URL": f"sqlite:///{tmp_path / 'interop.db'}",
    }
    runner = CliRunner(env=environ)
    _cli(runner, "domain", "add", DOMAIN)
    document = _cli(runner, "domain", "dns", DOMAIN)
    dkim_records = {r["name"]: r["value"] for r in document["records"] if r["purpose"] == "dkim"}
    assert len(dkim_records) == 2, document["records"]
    assert all(name.endswith(f"._domainkey.{DOMAIN}") for name in dkim_records)
    assert {"k=rsa" in v for v in dkim_records.values()} == {True, False}
    return {"environ": environ, "dkim": dkim_records}


async def _inject_and_read(environ: dict[str, str], build: Build) -> bytes:
    """Inject as `kakitome send` does and return the content the store holds."""
    settings = load_settings(environ=environ)
    store = await Database.open(settings.database.url, pool_size=1)
    try:
        signing = await DomainSigning.load(store, settings)
        injector = Injector(
            queue_store(store), settings, signer=signing.sign, return_path=signing.return_path
        )
        message_id = await injector.submit(build(injector))
        async with store.engine.connect() as conn:
            content = (
                await conn.execute(select(messages.c.content).where(messages.c.id == message_id))
            ).scalar_one()
    finally:
        await store.close()
    assert isinstance(content, bytes)
    assert content.count(b"DKIM-Signature:") == 2
    return content


def _dnsfunc(records: dict[str, str]) -> Callable[..., bytes | None]:
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode().rstrip("."))
        return value.encode() if value is not None else None

    return lookup


def _dkimpy(records: dict[str, str], content: bytes) -> list[bool]:
    """dkimpy's verdict per signature (top first: RSA, then Ed25519); a body hash
    mismatch raises in dkimpy and counts as a failure."""
    verdicts = []
    for index in range(2):
        try:
            verdicts.append(bool(dkim.DKIM(content).verify(idx=index, dnsfunc=_dnsfunc(records))))
        except dkim.ValidationError:
            verdicts.append(False)
    return verdicts


def _tamper(content: bytes) -> bytes:
    """Change one byte of the body (the last letter or digit before the end)."""
    head, _, body = content.partition(b"\r\n\r\n")
    data = bytearray(body)
    for index in range(len(data) - 1, -1, -1):
        if chr(data[index]).isalnum():
            data[index] = ord("A") if data[index] != ord("A") else ord("B")
            break
    else:  # pragma: no cover - every corpus body has a letter
        raise AssertionError("nothing to tamper with")
    return head + b"\r\n\r\n" + bytes(data)


@pytest.mark.parametrize(("name", "build"), CORPUS, ids=IDS)
async def test_verifiers_accept_signatures_from_printed_records(
    name: str, build: Build, printed: dict[str, Any], opendkim: str, perl_mail_dkim: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """dkimpy, OpenDKIM and Mail::DKIM (RSA) pass every signature of the injected and
    stored message with the keys `domain dns` printed; one changed byte fails each."""
    records: dict[str, str] = printed["dkim"]
    keys = cast(Keys, PrintedKeys(records))
    content = await _inject_and_read(printed["environ"], build)
    for needle in SHAPE[name]:
        assert needle.lower() in content.lower(), needle
    if name.startswith("dot-line"):
        header = content.lower().split(b"x-campaign-info:")[1].split(b"\r\n\r\n")[0]
        assert header.count(b"\r\n ") >= 2  # folded

    assert _dkimpy(records, content) == [True, True]
    good = tmp_path / "good"
    good.mkdir()
    assert opendkim_results(opendkim, good, keys, content) == [
        "pass rsa-sha256", "pass ed25519-sha256"
    ]  # fmt: skip
    assert mail_dkim_results(perl_mail_dkim, good, keys, content)[0] == "rsa-sha256 pass"

    tampered = _tamper(content)
    assert tampered != content and len(tampered) == len(content)
    assert _dkimpy(records, tampered) == [False, False]
    bad = tmp_path / "bad"
    bad.mkdir()
    assert opendkim_results(opendkim, bad, keys, tampered) == [
        "fail rsa-sha256", "fail ed25519-sha256"
    ]  # fmt: skip
    assert mail_dkim_results(perl_mail_dkim, bad, keys, tampered)[0] == "rsa-sha256 fail"
