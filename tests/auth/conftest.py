"""Fixtures for the auth tests: one RSA-2048 and one Ed25519 key per session, a signer, and
the independent verifiers (OpenDKIM's ``opendkim -t``, Mail::DKIM)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from kakitome.auth.dkim_keys import DKIMKeyPair, generate_key_pair
from kakitome.auth.dkim_sign import DKIMSigner
from kakitome.testing.postfix import find_program
from tests.fixtures_peers import require_peer

DOMAIN = "example.com"
DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Keys:
    rsa: DKIMKeyPair
    ed25519: DKIMKeyPair

    def txt_records(self, domain: str = DOMAIN) -> dict[str, str]:
        """``{record name: TXT value}``, as ``kakitome domain dns`` would print them."""
        return {pair.record_name(domain): pair.txt_value() for pair in (self.rsa, self.ed25519)}


@pytest.fixture(scope="session")
def keys() -> Keys:
    """A fresh RSA-2048 and Ed25519 key, selectors of November 2026."""
    when = date(2026, 11, 1)
    return Keys(generate_key_pair("rsa", when), generate_key_pair("ed25519", when))


@pytest.fixture(scope="session")
def signer(keys: Keys) -> DKIMSigner:
    """Signs for example.com with both keys, RSA on top."""
    return DKIMSigner(DOMAIN, [keys.rsa, keys.ed25519])


def _opendkim_probe() -> tuple[str | None, str | None]:
    path = shutil.which("opendkim") or find_program("opendkim")
    if path is None:
        return None, "opendkim not found (apt-get install opendkim opendkim-tools)"
    return path, None


def _mail_dkim_probe() -> tuple[str | None, str | None]:
    perl = shutil.which("perl")
    if perl is None:
        return None, "perl not found (apt-get install libmail-dkim-perl)"
    probe = subprocess.run(
        [perl, "-MMail::DKIM::Verifier", "-MNet::DNS", "-e", "1"], capture_output=True
    )
    if probe.returncode != 0:
        return None, "Perl module Mail::DKIM missing (apt-get install libmail-dkim-perl)"
    return perl, None


@pytest.fixture(scope="session")
def opendkim_verifier() -> str:
    """Path of ``opendkim`` (its ``-t`` test mode verifies files)."""
    return require_peer("opendkim -t", _opendkim_probe)


@pytest.fixture(scope="session")
def mail_dkim_perl() -> str:
    """Path of a ``perl`` that loads Mail::DKIM::Verifier."""
    return require_peer("perl-mail-dkim", _mail_dkim_probe)
