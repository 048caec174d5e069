"""Tests: DKIM key generation, selectors, PEM round trips and DNS records (T32, T33)."""

from __future__ import annotations

import base64
from datetime import date
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from kakitome.auth.dkim_keys import (
    DKIMKeyError,
    DKIMKeyPair,
    KeyType,
    generate_key_pair,
    load_private_key,
    load_private_key_file,
    make_selector,
    parse_selector,
    private_key_pem,
    split_txt,
)
from tests.auth.conftest import DATA, Keys


def test_generated_keys_are_rsa_2048_and_ed25519(keys: Keys) -> None:
    """T33: a domain gets an RSA-2048 and an Ed25519 key with dated selectors."""
    assert isinstance(keys.rsa.private_key, rsa.RSAPrivateKey)
    assert keys.rsa.private_key.key_size == 2048
    assert isinstance(keys.ed25519.private_key, ed25519.Ed25519PrivateKey)
    assert (keys.rsa.selector, keys.ed25519.selector) == ("k202611r", "k202611e")


def test_selector_scheme_round_trips() -> None:
    """T33: selectors are k<yyyymm><r|e>[n]; parse_selector reads them back."""
    assert make_selector("rsa", date(2027, 1, 5)) == "k202701r"
    assert make_selector(KeyType.ED25519, date(2027, 1, 5), sequence=3) == "k202701e3"
    assert parse_selector("k202701e3") == (2027, 1, KeyType.ED25519, 3)
    assert parse_selector("k202701r") == (2027, 1, KeyType.RSA, 1)
    assert parse_selector("default") is None


def test_refuses_to_generate_small_rsa_keys() -> None:
    """T32: we never make RSA keys under 2048 bits."""
    with pytest.raises(DKIMKeyError, match="2048"):
        generate_key_pair("rsa", date(2026, 1, 1), rsa_bits=1024)


def test_txt_records_have_the_published_form(keys: Keys) -> None:
    """T33: v=DKIM1; k=rsa; p=<SPKI> and v=DKIM1; k=ed25519; p=<32 raw bytes>."""
    rsa_value = keys.rsa.txt_value()
    assert rsa_value.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")
    der = base64.b64decode(rsa_value.split("p=", 1)[1])
    assert serialization.load_der_public_key(der).public_numbers() == (  # type: ignore[union-attr]
        keys.rsa.private_key.public_key().public_numbers()  # type: ignore[union-attr]
    )
    ed_value = keys.ed25519.txt_value()
    assert ed_value.startswith("v=DKIM1; k=ed25519; p=")
    raw = base64.b64decode(ed_value.split("p=", 1)[1])
    assert len(raw) == 32
    assert keys.ed25519.record_name("Example.COM.") == "k202611e._domainkey.example.com"


def test_zone_file_record_splits_into_255_octet_strings(keys: Keys) -> None:
    """T33: a 2048-bit key's record is split into quoted strings of at most 255 octets."""
    value = keys.rsa.txt_value()
    parts = split_txt(value)
    assert len(parts) == 2
    assert all(len(p) <= 255 for p in parts)
    assert "".join(parts) == value
    line = keys.rsa.zone_file_record("example.com", ttl=3600)
    assert line.startswith('k202611r._domainkey.example.com. 3600 IN TXT ( "v=DKIM1; k=rsa; ')
    assert line.count('"') == 4


def test_idn_domains_are_written_as_a_labels(keys: Keys) -> None:
    """T33: an IDN sending domain gets its record under the A-label name."""
    assert keys.ed25519.record_name("例え.jp") == "k202611e._domainkey.xn--r8jz45g.jp"


@pytest.mark.parametrize("passphrase", [None, b"correct horse"])
def test_pem_round_trip(keys: Keys, passphrase: bytes | None) -> None:
    """T32: keys serialise to PKCS#8 PEM, optionally encrypted, and load back."""
    for pair in (keys.rsa, keys.ed25519):
        pem = pair.private_pem(passphrase)
        assert (b"ENCRYPTED" in pem) == (passphrase is not None)
        loaded = load_private_key(pem, passphrase)
        assert DKIMKeyPair(pair.selector, loaded).txt_value() == pair.txt_value()


def test_unreadable_keys_give_clear_errors(keys: Keys, tmp_path: Path) -> None:
    """T32: missing files, garbage, wrong or missing passphrases are DKIMKeyErrors."""
    with pytest.raises(DKIMKeyError, match="cannot read DKIM key file"):
        load_private_key_file(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DKIMKeyError, match="not a readable PEM private key"):
        load_private_key_file(garbage)
    encrypted = keys.ed25519.private_pem(b"secret")
    with pytest.raises(DKIMKeyError, match="passphrase is needed"):
        load_private_key(encrypted)
    with pytest.raises(DKIMKeyError, match="wrong passphrase"):
        load_private_key(encrypted, b"wrong")
    with pytest.raises(DKIMKeyError, match="not encrypted"):
        load_private_key(keys.ed25519.private_pem(), b"secret")


def test_small_rsa_and_other_key_types_are_refused() -> None:
    """T32: RSA < 1024 bits and non-RSA/Ed25519 keys are refused on load."""
    # cryptography will not make keys under 1024 bits; this one is from openssl genpkey.
    with pytest.raises(DKIMKeyError, match="512-bit RSA key"):
        load_private_key_file(DATA / "rsa512.pem")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(DKIMKeyError, match="RSA or Ed25519"):
        load_private_key(pem)


def test_private_key_pem_is_pkcs8(keys: Keys) -> None:
    """T32: the PEM is PKCS#8 ('BEGIN PRIVATE KEY'), which every tool reads."""
    assert private_key_pem(keys.rsa.private_key).startswith(b"-----BEGIN PRIVATE KEY-----")
