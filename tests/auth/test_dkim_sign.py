"""Tests: the DKIM signer — output verified by dkimpy, field layout, refusals (T32, T33, T38)."""

from __future__ import annotations

import re

import dkim
import dkim.canonicalization
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kakitome.auth.dkim_canon import (
    relaxed_body,
    relaxed_header,
    simple_body,
    split_message,
)
from kakitome.auth.dkim_keys import DKIMKeyError, DKIMKeyPair
from kakitome.auth.dkim_sign import LINE_WIDTH, DKIMSigner, SignerTable
from kakitome.errors import MessageError
from tests.auth.conftest import DATA, DOMAIN, Keys
from tests.auth.corpus import corpus

CORPUS = corpus()
SIMPLE = (
    b"From: Joe <joe@example.com>\r\nTo: Suzie <suzie@example.net>\r\nSubject: dinner\r\n"
    b"Date: Fri, 27 Nov 2026 09:00:00 +0900\r\nMessage-ID: <1@example.com>\r\n\r\nHi.\r\n"
)


def dkimpy_verify(message: bytes, keys: Keys) -> list[bool]:
    """dkimpy's verdict for each DKIM-Signature field, top first."""
    records = {name.encode(): value.encode() for name, value in keys.txt_records().items()}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.rstrip(b"."))

    verifier = dkim.DKIM(message)
    count = sum(1 for line in message.split(b"\r\n\r\n")[0].split(b"\r\n")
                if line.lower().startswith(b"dkim-signature:"))  # fmt: skip
    verdicts = []
    for idx in range(count):
        try:
            verdicts.append(bool(verifier.verify(idx, dnsfunc=dnsfunc)))
        except dkim.DKIMException:
            verdicts.append(False)
    return verdicts


def signature_tags(field: bytes) -> dict[str, str]:
    value = re.sub(r"\s+", "", field.decode().split(":", 1)[1])
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


@pytest.mark.parametrize(("name", "message"), CORPUS, ids=[n for n, _ in CORPUS])
def test_dkimpy_verifies_both_signatures(
    name: str, message: bytes, signer: DKIMSigner, keys: Keys
) -> None:
    """T33: dkimpy accepts the rsa-sha256 and the ed25519-sha256 signature on every message."""
    assert dkimpy_verify(signer.sign(message), keys) == [True, True]


@pytest.mark.parametrize(("name", "message"), CORPUS, ids=[n for n, _ in CORPUS])
def test_canonicalisation_matches_dkimpy(name: str, message: bytes) -> None:
    """T32: our relaxed and simple canonicalisation equal dkimpy's on the whole corpus."""
    fields, body = split_message(message)
    headers = [(f.raw.split(b":", 1)[0], f.raw.split(b":", 1)[1]) for f in fields]
    relaxed = dkim.canonicalization.Relaxed
    simple = dkim.canonicalization.Simple
    ours = [(relaxed_header(f.raw)) for f in fields]
    theirs = [n + b":" + v for n, v in relaxed.canonicalize_headers(headers)]
    assert ours == theirs
    assert relaxed_body(body) == relaxed.canonicalize_body(body)
    assert simple_body(body) == simple.canonicalize_body(body)


def test_field_layout(keys: Keys) -> None:
    """T32: relaxed/relaxed, SHA-256 only, no l=, t= and x=, one body hash, lines ≤ 78."""
    signer = DKIMSigner(DOMAIN, [keys.rsa, keys.ed25519], expire_after=3600, clock=lambda: 1e9)
    fields = signer.signature_fields(CORPUS[0][1])
    assert len(fields) == 2
    tags = [signature_tags(f) for f in fields]
    assert [t["a"] for t in tags] == ["rsa-sha256", "ed25519-sha256"]
    assert [t["s"] for t in tags] == [keys.rsa.selector, keys.ed25519.selector]
    for t in tags:
        assert t["c"] == "relaxed/relaxed"
        assert t["d"] == DOMAIN
        assert (t["t"], t["x"]) == ("1000000000", "1000003600")
        assert "l" not in t
    assert tags[0]["bh"] == tags[1]["bh"]
    for field in fields:
        assert field.endswith(b"\r\n")
        assert all(len(line) <= LINE_WIDTH for line in field.split(b"\r\n"))


def test_from_and_list_unsubscribe_are_over_signed(signer: DKIMSigner) -> None:
    """T33, T38: From, List-Unsubscribe and List-Unsubscribe-Post appear once more in h=."""
    message = dict(CORPUS)["long-folded-headers"]
    h = signature_tags(signer.signature_fields(message)[0])["h"].split(":")
    assert h.count("from") == 2
    assert h.count("list-unsubscribe") == 2
    assert h.count("list-unsubscribe-post") == 2
    assert h.count("feedback-id") == 2
    assert "x-long" not in h
    assert "received" not in h


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: b"From: evil@example.org\r\n" + m, id="added-from-on-top"),
        pytest.param(lambda m: m.replace(b"\r\n\r\n", b"\r\nFrom: evil@example.org\r\n\r\n", 1),
                     id="added-from-at-bottom"),
        pytest.param(lambda m: m.replace(b"\r\n\r\n", b"\r\nSubject: Free money\r\n\r\n", 1),
                     id="added-subject"),
        pytest.param(lambda m: m.replace(b"Hi.", b"Ha."), id="changed-body"),
        pytest.param(lambda m: m + b"appended\r\n", id="appended-body"),
    ],
)  # fmt: skip
def test_tampering_breaks_both_signatures(tamper: object, signer: DKIMSigner, keys: Keys) -> None:
    """T32/T33: an added From or Subject, or a changed body, fails both signatures."""
    signed = signer.sign(SIMPLE)
    assert callable(tamper)
    assert dkimpy_verify(tamper(signed), keys) == [False, False]


def test_added_whitespace_survives_relaxed(signer: DKIMSigner, keys: Keys) -> None:
    """T32: relaxed canonicalisation tolerates refolding and trailing whitespace."""
    signed = signer.sign(SIMPLE)
    refolded = signed.replace(b"Subject: dinner", b"Subject:\r\n\t dinner  ").replace(
        b"Hi.\r\n", b"Hi. \t\r\n\r\n"
    )
    assert dkimpy_verify(refolded, keys) == [True, True]


@pytest.mark.parametrize("count", [0, 2])
def test_refuses_messages_without_exactly_one_from(signer: DKIMSigner, count: int) -> None:
    """T32: a message to sign must have exactly one From field."""
    message = SIMPLE.replace(b"From: Joe <joe@example.com>\r\n", b"")
    message = b"From: a@example.com\r\n" * count + message
    with pytest.raises(MessageError, match=f"this one has {count}"):
        signer.sign(message)


def test_refuses_rsa_keys_under_1024_bits() -> None:
    """T32: an RSA key under 1024 bits cannot build a signer."""
    key = serialization.load_pem_private_key((DATA / "rsa512.pem").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    with pytest.raises(DKIMKeyError, match="at least 1024 bits"):
        DKIMSigner(DOMAIN, [DKIMKeyPair("old", key)])


def test_from_pem_builds_the_same_signer(keys: Keys) -> None:
    """T32: a signer built from (encrypted) PEMs signs verifiably."""
    signer = DKIMSigner.from_pem(
        DOMAIN,
        {p.selector: p.private_pem(b"pw") for p in (keys.ed25519, keys.rsa)},
        passphrase=b"pw",
    )
    assert dkimpy_verify(signer.sign(SIMPLE), keys) == [True, True]


def test_signer_table_signs_configured_domains_only(signer: DKIMSigner, keys: Keys) -> None:
    """T32: the injection signer signs known From domains and refuses others."""
    table = SignerTable([signer])
    assert dkimpy_verify(table(SIMPLE, "EXAMPLE.com"), keys) == [True, True]
    with pytest.raises(MessageError, match="not a configured sending domain"):
        table(SIMPLE, "example.org")
    assert SignerTable([signer], allow_unsigned=True)(SIMPLE, "example.org") == SIMPLE
