"""Tests: the DKIM verifier — RFC 8463 example, both canonicalisations, and the refusals
of T32 (several From, expired x=, rsa-sha1, RSA < 1024)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kakitome.auth.dkim_keys import dkim_txt_value, ed25519_key_from_seed, public_key_b64
from kakitome.auth.dkim_sign import DKIMSigner
from kakitome.auth.dkim_verify import verify_dkim, verify_dkim_async
from kakitome.auth.dnsio import ZoneLookup
from tests.auth.conftest import DATA, DOMAIN, Keys
from tests.auth.corpus import corpus

RFC8463_MESSAGE = (DATA / "rfc8463-example.eml").read_bytes()
RFC8463_TIME = 1528637909
SIMPLE = (
    b"From: Joe <joe@example.com>\r\nTo: Suzie <suzie@example.net>\r\nSubject: dinner\r\n"
    b"Date: Fri, 27 Nov 2026 09:00:00 +0900\r\nMessage-ID: <1@example.com>\r\n\r\n"
    b"Hi.  \r\n\r\nWe lost the game.\r\n\r\n"
)


def rfc8463_zone() -> ZoneLookup:
    zone = ZoneLookup()
    for line in (DATA / "rfc8463-keys.txt").read_text().splitlines():
        name, value = line.split(" ", 1)
        zone.add(name, "TXT", value)
    return zone


def zone_for(keys: Keys) -> ZoneLookup:
    return ZoneLookup({name: [("TXT", value)] for name, value in keys.txt_records().items()})


def dkimpy_sign(message: bytes, selector: bytes, key_pem: bytes, **options: object) -> bytes:
    signature = dkim.sign(message, selector, DOMAIN.encode(), key_pem, **options)
    assert isinstance(signature, bytes)
    return signature + message


def test_rfc8463_example_verifies() -> None:
    """T33: both signatures of RFC 8463 Appendix A verify with the published keys."""
    result = verify_dkim(RFC8463_MESSAGE, rfc8463_zone(), now=RFC8463_TIME + 60)
    assert [(s.algorithm, s.result) for s in result.signatures] == [
        ("ed25519-sha256", "pass"),
        ("rsa-sha256", "pass"),
    ]
    assert result.passing_domains == ("football.example.com", "football.example.com")


def test_rfc8463_seed_gives_the_published_key() -> None:
    """T33: the Appendix A.1 private seed yields the A.2 public key."""
    key = ed25519_key_from_seed("nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
    assert public_key_b64(key.public_key()) == "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def test_rfc8463_example_verifies_in_opendkim(opendkim_verifier: str, tmp_path: Path) -> None:
    """T33: OpenDKIM agrees that the RFC 8463 example verifies (both algorithms)."""
    config = tmp_path / "opendkim.conf"
    config.write_text(f"Mode v\nTestPublicKeys {DATA / 'rfc8463-keys.txt'}\nSyslog no\n")
    run = subprocess.run(
        [opendkim_verifier, "-x", str(config), "-vvv", "-t", str(DATA / "rfc8463-example.eml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.stdout.count("dkim=pass") == 2, run.stdout + run.stderr


def test_rfc8463_example_tampered_fails() -> None:
    """T33: the example's signatures fail when the body is changed."""
    tampered = RFC8463_MESSAGE.replace(b"hungry", b"thirsty")
    result = verify_dkim(tampered, rfc8463_zone(), now=RFC8463_TIME)
    assert [s.result for s in result.signatures] == ["fail", "fail"]
    assert result.signatures[0].reason == "body hash did not verify"


@pytest.mark.parametrize(("name", "message"), corpus(), ids=[n for n, _ in corpus()])
def test_our_signatures_verify(name: str, message: bytes, signer: DKIMSigner, keys: Keys) -> None:
    """T33: our verifier accepts our own rsa-sha256 and ed25519-sha256 signatures."""
    result = verify_dkim(signer.sign(message), zone_for(keys))
    assert [s.result for s in result.signatures] == ["pass", "pass"]
    assert result.signatures[0].key_bits == 2048


async def test_async_lookup(signer: DKIMSigner, keys: Keys) -> None:
    """T33: the verifier runs with a coroutine lookup (the SMTP server's resolver)."""
    result = await verify_dkim_async(signer.sign(SIMPLE), zone_for(keys).aio)
    assert result.result == "pass"


@pytest.mark.parametrize("canon", [b"simple/simple", b"simple/relaxed", b"relaxed/simple"])
def test_other_canonicalisations(keys: Keys, canon: bytes) -> None:
    """T32: signatures made by dkimpy with simple canonicalisation verify, and fail when
    whitespace changes that only relaxed would forgive."""
    header, body = canon.split(b"/")
    signed = dkimpy_sign(SIMPLE, keys.rsa.selector.encode(), keys.rsa.private_pem(),
                         canonicalize=(header, body))  # fmt: skip
    assert verify_dkim(signed, zone_for(keys)).result == "pass"
    changed = signed.replace(b"Subject: dinner", b"Subject:  dinner").replace(b"Hi.  ", b"Hi. ")
    assert verify_dkim(changed, zone_for(keys)).result == "fail"


def test_body_length_tag_is_honoured(keys: Keys) -> None:
    """T32: l= from other signers is honoured (content after it is not covered)."""
    signed = dkimpy_sign(SIMPLE, keys.rsa.selector.encode(), keys.rsa.private_pem(),
                         length=True)  # fmt: skip
    assert verify_dkim(signed + b"appended\r\n", zone_for(keys)).result == "pass"


def test_several_from_fields_fail(keys: Keys) -> None:
    """T32: a message with two From fields fails even when the signature itself is valid."""
    signed = dkimpy_sign(SIMPLE, keys.rsa.selector.encode(), keys.rsa.private_pem(),
                         include_headers=[b"from", b"to", b"subject"])  # fmt: skip
    forged = signed.replace(b"\r\n\r\n", b"\r\nFrom: ceo@example.com\r\n\r\n", 1)
    result = verify_dkim(forged, zone_for(keys))
    assert result.signatures[0].result == "fail"
    assert "2 From fields" in result.signatures[0].reason


def test_expired_signature_fails(keys: Keys) -> None:
    """T32: a signature past its x= fails."""
    signer = DKIMSigner(DOMAIN, [keys.ed25519], expire_after=3600, clock=lambda: 1_000_000)
    signed = signer.sign(SIMPLE)
    assert verify_dkim(signed, zone_for(keys), now=1_000_100).result == "pass"
    result = verify_dkim(signed, zone_for(keys), now=1_003_601)
    assert (result.result, result.signatures[0].reason) == ("fail", "signature expired (x=)")


def test_rsa_sha1_is_refused(keys: Keys) -> None:
    """T32: rsa-sha1 signatures are not accepted (RFC 8301): result policy."""
    signed = dkimpy_sign(SIMPLE, keys.rsa.selector.encode(), keys.rsa.private_pem(),
                         signature_algorithm=b"rsa-sha1")  # fmt: skip
    result = verify_dkim(signed, zone_for(keys))
    assert result.signatures[0].result == "policy"
    assert "rsa-sha1" in result.signatures[0].reason


def test_small_rsa_keys_are_refused() -> None:
    """T32: signatures by RSA keys under 1024 bits are not accepted: result policy."""
    pem = (DATA / "rsa512.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signed = dkimpy_sign(SIMPLE, b"old", pem)
    zone = ZoneLookup({f"old._domainkey.{DOMAIN}": [("TXT", dkim_txt_value(key.public_key()))]})
    result = verify_dkim(signed, zone)
    assert (result.result, result.signatures[0].key_bits) == ("policy", 512)


def test_key_problems(signer: DKIMSigner, keys: Keys) -> None:
    """T32: no key or a revoked key is permerror; a DNS timeout is temperror."""
    signed = signer.sign(SIMPLE)
    assert [s.result for s in verify_dkim(signed, ZoneLookup()).signatures] == [
        "permerror", "permerror",
    ]  # fmt: skip
    revoked = ZoneLookup({n: [("TXT", "v=DKIM1; p=")] for n in keys.txt_records()})
    assert verify_dkim(signed, revoked).signatures[0].reason == "key revoked (empty p=)"
    timeout = ZoneLookup(timeouts=keys.txt_records())
    assert verify_dkim(signed, timeout).result == "temperror"


def test_unsigned_message_has_no_result() -> None:
    """T32: a message without signatures gives result none."""
    assert verify_dkim(SIMPLE, ZoneLookup()).result == "none"
