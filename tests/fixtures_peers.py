"""Fixtures for the real, independent peers that Debian ships (Postfix, swaks, OpenDKIM,
Mail::DKIM, Chromium, unbound).

A test that needs a peer asks for its fixture. When the peer is missing the test is
skipped with the reason — unless ``KAKITOME_TEST_REQUIRE_PEERS=1`` (``.ci/run`` sets it),
when it fails with the same reason: in CI a missing peer is a broken set-up, not a pass.

Each probe runs once per session; the result is cached by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import pytest

from kakitome.testing.postfix import find_program, postfix_unavailable_reason
from kakitome.testing.unbound import find_unbound, unbound_unavailable_reason

REQUIRE_PEERS_ENV = "KAKITOME_TEST_REQUIRE_PEERS"

# A probe returns (path or handle, None) when the peer is usable, (None, reason) otherwise.
Probe = Callable[[], tuple[str | None, str | None]]


def peers_required() -> bool:
    """True when a missing peer must fail the test instead of skipping it."""
    return os.environ.get(REQUIRE_PEERS_ENV, "") not in ("", "0", "false", "no")


def require_peer(name: str, probe: Probe) -> str:
    """Run ``probe`` (cached per name) and return what it found, or skip/fail with why."""
    found, reason = _probe_once(name, probe)
    if found is not None:
        return found
    message = f"peer {name} unavailable: {reason}"
    if peers_required():
        pytest.fail(f"{message} ({REQUIRE_PEERS_ENV}=1)", pytrace=False)
    pytest.skip(message)


_PROBED: dict[str, tuple[str | None, str | None]] = {}


def _probe_once(name: str, probe: Probe) -> tuple[str | None, str | None]:
    if name not in _PROBED:
        _PROBED[name] = probe()
    return _PROBED[name]


def _program_probe(*names: str, package: str) -> Probe:
    """A probe that finds the first program of ``names`` (PATH, then /usr/sbin etc.)."""

    def probe() -> tuple[str | None, str | None]:
        for name in names:
            path = shutil.which(name) or find_program(name)
            if path:
                return path, None
        return None, f"none of {', '.join(names)} found (apt-get install {package})"

    return probe


def _postfix_probe() -> tuple[str | None, str | None]:
    reason = postfix_unavailable_reason()
    if reason is not None:
        return None, reason
    return find_program("postfix"), None


def _perl_mail_dkim_probe() -> tuple[str | None, str | None]:
    perl = shutil.which("perl")
    if perl is None:
        return None, "perl not found (apt-get install libmail-dkim-perl)"
    result = subprocess.run(
        [perl, "-MMail::DKIM::Verifier", "-e", "1"], capture_output=True, check=False
    )
    if result.returncode != 0:
        return None, "Perl module Mail::DKIM missing (apt-get install libmail-dkim-perl)"
    return perl, None


def _unbound_probe() -> tuple[str | None, str | None]:
    reason = unbound_unavailable_reason()
    if reason is not None:
        return None, reason
    return find_unbound(), None


PROBES: dict[str, Probe] = {
    "postfix": _postfix_probe,
    "swaks": _program_probe("swaks", package="swaks"),
    "opendkim": _program_probe("opendkim-testmsg", "opendkim", package="opendkim opendkim-tools"),
    "perl-mail-dkim": _perl_mail_dkim_probe,
    "chromium": _program_probe("chromium", "chromium-browser", package="chromium"),
    "unbound": _unbound_probe,
}


@pytest.fixture(scope="session")
def postfix_bin() -> str:
    """Path of ``postfix``, with a private instance startable here (needs root)."""
    return require_peer("postfix", PROBES["postfix"])


@pytest.fixture(scope="session")
def swaks_bin() -> str:
    """Path of ``swaks``."""
    return require_peer("swaks", PROBES["swaks"])


@pytest.fixture(scope="session")
def opendkim_bin() -> str:
    """Path of OpenDKIM's verifier (``opendkim-testmsg``, else ``opendkim``)."""
    return require_peer("opendkim", PROBES["opendkim"])


@pytest.fixture(scope="session")
def perl_mail_dkim() -> str:
    """Path of a ``perl`` that can load Mail::DKIM."""
    return require_peer("perl-mail-dkim", PROBES["perl-mail-dkim"])


@pytest.fixture(scope="session")
def chromium_bin() -> str:
    """Path of the system Chromium (for Playwright tests)."""
    return require_peer("chromium", PROBES["chromium"])


@pytest.fixture(scope="session")
def unbound_bin() -> str:
    """Path of the ``unbound`` daemon (a validating resolver for DNSSEC tests)."""
    return require_peer("unbound", PROBES["unbound"])
