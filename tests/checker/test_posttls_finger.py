"""The checker's verdicts agree with Postfix's own probe, posttls-finger, on the same hosts:
STARTTLS offered, protocol, cipher and trust (untrusted / trusted / verified)."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from collections.abc import Callable

import pytest

from kakitome.checker.service import Checker
from kakitome.testing import CertKind, PeerBehaviour
from kakitome.testing.postfix import find_program
from tests.fixtures_peers import require_peer
from tests.fixtures_world import MakeDomain

V = ssl.TLSVersion
_ESTABLISHED = re.compile(
    r"(?P<trust>\w+) TLS connection established to \S+: (?P<protocol>\S+) with cipher "
    r"(?P<cipher>\S+)"
)


def _probe() -> tuple[str | None, str | None]:
    path = shutil.which("posttls-finger") or find_program("posttls-finger")
    return (path, None) if path else (None, "posttls-finger not found (apt-get install postfix)")


@pytest.fixture(scope="module")
def posttls_finger() -> str:
    """Path of Debian's posttls-finger."""
    return require_peer("posttls-finger", _probe)


@pytest.mark.postfix
@pytest.mark.parametrize(
    "behaviour",
    [
        PeerBehaviour(),
        PeerBehaviour(cert=CertKind.EXPIRED),
        PeerBehaviour(cert=CertKind.WRONG_NAME),
        PeerBehaviour(cert=CertKind.SELF_SIGNED),
        PeerBehaviour(starttls=False),
        PeerBehaviour(tls_min_version=V.TLSv1, tls_max_version=V.TLSv1),
        PeerBehaviour(tls_max_version=V.TLSv1_2),
    ],
    ids=["valid", "expired", "wrong-name", "self-signed", "no-starttls", "tls10", "tls12"],
)
async def test_agrees_with_posttls_finger(
    posttls_finger: str,
    make_domain: MakeDomain,
    make_checker: Callable[..., Checker],
    behaviour: PeerBehaviour,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Same STARTTLS, protocol, cipher and trust as posttls-finger -l secure (T8 vocabulary)."""
    domain, peer = make_domain(behaviour)
    mx_name = domain.mx[0][1]
    report = await make_checker().check_domain(domain.name)
    probe = report.facts.hosts[0].probes[0]
    config = tmp_path_factory.mktemp("postfix")
    (config / "main.cf").write_text("compatibility_level = 3.6\n")

    def finger(level: str) -> str:
        result = subprocess.run(
            [posttls_finger, "-l", level, "-F", str(peer.ca.ca_file), "-m", "1",
             f"[{peer.ip}]:{peer.port}", mx_name],
            capture_output=True, text=True, timeout=60, check=False,
            env={"MAIL_CONFIG": str(config), "PATH": "/usr/sbin:/usr/bin:/bin"},
        )
        return result.stdout + result.stderr

    # At "may" Postfix reports chain trust (Trusted/Untrusted) without matching names, and
    # negotiates as our opportunistic probe does: compare STARTTLS, protocol, cipher, trust.
    output = finger("may")
    offered = bool(re.search(r"< 250[- ]STARTTLS\s*$", output, re.M))
    assert probe.starttls_offered is offered, output
    match = _ESTABLISHED.search(output)
    if not offered:
        assert match is None and not probe.tls_ok
        assert probe.verification == "none"
        return
    assert match is not None, output
    assert probe.tls_version == match["protocol"]
    assert probe.cipher == match["cipher"]
    trusted = probe.verification in ("trusted", "verified")
    assert trusted is (match["trust"] in ("Trusted", "Verified")), output
    # At "secure" with the MX name to match, Postfix says Verified exactly when the chain
    # verifies and the name matches (when its mandatory protocols allow a session at all).
    output = finger("secure")
    match = _ESTABLISHED.search(output)
    if match is not None:
        assert (probe.verification == "verified") is (match["trust"] == "Verified"), output
