"""Tests: independent verifiers accept our signatures — OpenDKIM (RSA and Ed25519) and
Mail::DKIM (RSA; Debian's version has no Ed25519) — with the keys from our TXT records."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from kakitome.auth.dkim_sign import DKIMSigner
from tests.auth.conftest import DATA, Keys
from tests.auth.corpus import corpus

pytestmark = pytest.mark.peers

CORPUS = corpus()
IDS = [name for name, _ in CORPUS]


def _keys_file(tmp_path: Path, keys: Keys) -> Path:
    """OpenDKIM's TestPublicKeys format, which the Mail::DKIM script reads too."""
    path = tmp_path / "keys"
    path.write_text("".join(f"{n} {v}\n" for n, v in keys.txt_records().items()))
    return path


def opendkim_results(opendkim: str, tmp_path: Path, keys: Keys, message: bytes) -> list[str]:
    """OpenDKIM's ``dkim=`` results from its Authentication-Results, e.g. ``pass rsa-sha256``."""
    config = tmp_path / "opendkim.conf"
    config.write_text(
        f"Mode v\nTestPublicKeys {_keys_file(tmp_path, keys)}\nSyslog no\nMinimumKeyBits 1024\n"
    )
    path = tmp_path / "message.eml"
    # opendkim -t ignores a last line without a line ending; SMTP would have added one
    # (the DATA terminator starts with CRLF), and both canonicalisations add it too.
    path.write_bytes(message if message.endswith(b"\r\n") else message + b"\r\n")
    run = subprocess.run(
        [opendkim, "-x", str(config), "-vvv", "-t", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return [
        f"{m.group(1)} {m.group(2)}"
        for m in re.finditer(r"dkim=(\w+)[^;]*?header\.a=([\w-]+)", run.stdout)
    ]


def mail_dkim_results(perl: str, tmp_path: Path, keys: Keys, message: bytes) -> list[str]:
    """Mail::DKIM's result per signature, e.g. ``rsa-sha256 pass``."""
    run = subprocess.run(
        [perl, str(DATA / "mail_dkim_verify.pl"), str(_keys_file(tmp_path, keys))],
        input=message, capture_output=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    return [" ".join(line.split("\t")[:3:2]) for line in run.stdout.decode().splitlines()]


@pytest.mark.parametrize(("name", "message"), CORPUS, ids=IDS)
def test_opendkim_verifies_both_signatures(
    name: str, message: bytes, signer: DKIMSigner, keys: Keys, opendkim_verifier: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """T33: OpenDKIM accepts the rsa-sha256 and ed25519-sha256 signature on every message."""
    results = opendkim_results(opendkim_verifier, tmp_path, keys, signer.sign(message))
    assert results == ["pass rsa-sha256", "pass ed25519-sha256"]


def test_opendkim_rejects_an_added_from(
    signer: DKIMSigner, keys: Keys, opendkim_verifier: str, tmp_path: Path
) -> None:
    """T32: over-signed From: OpenDKIM fails both signatures when a From is added."""
    signed = b"From: evil@example.org\r\n" + signer.sign(CORPUS[0][1])
    results = opendkim_results(opendkim_verifier, tmp_path, keys, signed)
    assert not any(r.startswith("pass") for r in results)


@pytest.mark.parametrize(("name", "message"), CORPUS, ids=IDS)
def test_mail_dkim_verifies_the_rsa_signature(
    name: str, message: bytes, signer: DKIMSigner, keys: Keys, mail_dkim_perl: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    """T33: Mail::DKIM accepts the rsa-sha256 signature (its Debian version skips Ed25519)."""
    results = mail_dkim_results(mail_dkim_perl, tmp_path, keys, signer.sign(message))
    assert results[0] == "rsa-sha256 pass"
    assert results[1] in ("ed25519-sha256 pass", "ed25519-sha256 invalid")


def test_mail_dkim_rejects_a_changed_body(
    signer: DKIMSigner, keys: Keys, mail_dkim_perl: str, tmp_path: Path
) -> None:
    """T32: the check is real: Mail::DKIM fails a signature whose body was changed."""
    signed = signer.sign(CORPUS[0][1]).replace(b"hungry", b"thirsty")
    results = mail_dkim_results(mail_dkim_perl, tmp_path, keys, signed)
    assert results[0] == "rsa-sha256 fail"
