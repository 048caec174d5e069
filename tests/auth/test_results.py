"""Tests: Authentication-Results generation and removal of forged ones (T35)."""

from __future__ import annotations

import pytest

from kakitome.auth.dkim_sign import DKIMSigner
from kakitome.auth.dkim_verify import verify_dkim
from kakitome.auth.dmarc import author_domain, check_dmarc
from kakitome.auth.dnsio import ZoneLookup
from kakitome.auth.results import (
    AuthResult,
    add_authentication_results,
    authentication_results_field,
    authserv_id_of,
    dkim_auth_results,
    dmarc_auth_result,
    remove_forged_results,
    spf_auth_result,
)
from kakitome.auth.spf import check_host
from tests.auth.conftest import Keys

AUTHSERV_ID = "mx.kakitome.example"
MESSAGE = (
    b"Authentication-Results: MX.Kakitome.Example; dkim=pass header.d=bank.example\r\n"
    b"Authentication-Results: (a comment) mx.kakitome.example 1;\r\n\tspf=pass\r\n"
    b"Authentication-Results: other.example; dkim=fail\r\n"
    b'Authentication-Results: "mx.kakitome.example"; dmarc=pass\r\n'
    b"From: Joe <joe@example.com>\r\nTo: Suzie <suzie@example.net>\r\nSubject: dinner\r\n"
    b"Date: Fri, 27 Nov 2026 09:00:00 +0900\r\nMessage-ID: <1@example.com>\r\n\r\nHi.\r\n"
)


def test_authserv_id_parsing() -> None:
    """T35: the authserv-id is read past comments, quotes and a version."""
    assert authserv_id_of(b"Authentication-Results: (c) Mx.Example 1; none\r\n") == "mx.example"
    assert authserv_id_of(b'Authentication-Results: "mx.example"; none\r\n') == "mx.example"
    assert authserv_id_of(b"Authentication-Results:\r\n\tmx.example;\r\n\tspf=pass\r\n") == (
        "mx.example"
    )


def test_forged_results_with_our_id_are_removed() -> None:
    """T35: every field claiming our authserv-id goes; other ADMDs' fields stay."""
    cleaned = remove_forged_results(MESSAGE, AUTHSERV_ID)
    assert cleaned.count(b"Authentication-Results:") == 1
    assert b"other.example; dkim=fail" in cleaned
    assert cleaned.endswith(b"\r\n\r\nHi.\r\n")
    untouched = MESSAGE.split(b"\r\n", 5)[5]
    assert remove_forged_results(untouched, AUTHSERV_ID) is untouched


def test_field_generation_quotes_untrusted_values() -> None:
    """T35: values that are not tokens are quoted; nothing can add a line."""
    field = authentication_results_field(
        AUTHSERV_ID,
        [AuthResult("dkim", "fail", 'bad "sig"\r\nX-Evil: 1', (("header.b", "ab/+cd=="),))],
    )
    assert field.count(b"\r\n") == 2
    assert b'reason="bad \\"sig\\"  X-Evil: 1"' in field
    assert b'header.b="ab/+cd=="' in field
    assert authentication_results_field(AUTHSERV_ID, []) == (
        b"Authentication-Results: mx.kakitome.example; none\r\n"
    )
    with pytest.raises(ValueError, match="authserv-id"):
        authentication_results_field("bad id;", [])


def test_end_to_end_inbound_results(signer: DKIMSigner, keys: Keys) -> None:
    """T35: DKIM, SPF and DMARC results of a signed message, written with our id, after the
    forged ones are removed."""
    message = signer.sign(MESSAGE.split(b"\r\n", 5)[5])
    forged = b"Authentication-Results: mx.kakitome.example; dmarc=pass\r\n" + message
    zone = ZoneLookup({name: [("TXT", value)] for name, value in keys.txt_records().items()})
    zone.add("example.com", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")
    dkim = verify_dkim(forged, zone)
    spf = check_host("192.0.2.10", "bounce@example.com", "mail.example.com", zone)
    domain = author_domain(forged)
    assert domain == "example.com"
    dmarc = check_dmarc(domain, zone, dkim_domains=dkim.passing_domains,
                        spf_domain="example.com", spf_pass=spf.result == "pass")  # fmt: skip
    results = [
        *dkim_auth_results(dkim),
        spf_auth_result(spf, mail_from="bounce@example.com", helo="mail.example.com"),
        dmarc_auth_result(dmarc),
    ]
    out = add_authentication_results(forged, AUTHSERV_ID, results)
    header = out.split(b"\r\n\r\n")[0].decode()
    assert header.count("Authentication-Results:") == 1
    assert header.startswith("Authentication-Results: mx.kakitome.example;\r\n\tdkim=pass ")
    assert "header.a=rsa-sha256" in header and "header.a=ed25519-sha256" in header
    assert "spf=pass smtp.mailfrom=bounce@example.com" in header
    assert "dmarc=pass header.from=example.com policy.dmarc=none" in header
    assert "dmarc=pass\r\n" not in header
