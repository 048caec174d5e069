"""Tests: DMARC per RFC 9989 — record parsing, tree walk, alignment and verdicts (T34)."""

from __future__ import annotations

import pytest

from kakitome.auth.dmarc import (
    author_domain,
    check_dmarc,
    check_dmarc_async,
    organizational_domain_steps,
    parse_dmarc_record,
    walk_targets,
)
from kakitome.auth.dnsio import ZoneLookup, run_sync


def zone(records: dict[str, str], **extra: list[tuple[str, str]]) -> ZoneLookup:
    """``{name: DMARC TXT}`` as a zone; ``extra`` adds other records by name."""
    z = ZoneLookup({f"_dmarc.{name}": [("TXT", value)] for name, value in records.items()})
    for name, pairs in extra.items():
        for rdtype, value in pairs:
            z.add(name.replace("_", "."), rdtype, value)
    return z


def test_record_parsing_is_tolerant() -> None:
    """T34: unknown tags ignored, old pct/rf/ri tolerated, np/psd/t read, bad p is none."""
    record = parse_dmarc_record(
        "v=DMARC1; p=Reject; sp=quarantine; np=reject; psd=n; t=y; adkim=s; aspf=r; "
        "pct=50; rf=afrf; ri=86400; future=thing; rua=mailto:a@example.com, mailto:b@x.jp"
    )
    assert record is not None
    assert (record.policy, record.subdomain_policy, record.nonexistent_policy) == (
        "reject", "quarantine", "reject",
    )  # fmt: skip
    assert (record.psd, record.testing, record.adkim, record.aspf) == ("n", True, "s", "r")
    assert record.rua == ("mailto:a@example.com", "mailto:b@x.jp")
    assert record.tags["future"] == "thing"
    assert parse_dmarc_record("v=DMARC1; p=bogus").policy == "none"  # type: ignore[union-attr]
    assert parse_dmarc_record("v=DMARC1").policy == "none"  # type: ignore[union-attr]
    assert parse_dmarc_record("v=DMARC1; pct=0").testing  # type: ignore[union-attr]
    assert parse_dmarc_record("p=reject; v=DMARC1") is None
    assert parse_dmarc_record("v=spf1 -all") is None


def test_walk_targets_cut_long_names() -> None:
    """T34: the walk goes one label at a time, jumping to 7 labels from 8 or more."""
    assert walk_targets("a.mail.example.com") == [
        "a.mail.example.com", "mail.example.com", "example.com", "com",
    ]  # fmt: skip
    long = "a.b.c.d.e.f.g.h.example.com"
    targets = walk_targets(long)
    assert targets[:3] == [long, "d.e.f.g.h.example.com", "e.f.g.h.example.com"]
    assert len(targets) == 8
    assert targets[-1] == "com"


@pytest.mark.parametrize(
    ("records", "name", "org"),
    [
        ({"example.com": "v=DMARC1; p=reject"}, "a.b.example.com", "example.com"),
        ({}, "a.b.example.com", "a.b.example.com"),
        ({"example.com": "v=DMARC1; p=none", "com": "v=DMARC1; p=none; psd=y"},
         "a.b.example.com", "example.com"),
        ({"b.example.com": "v=DMARC1; p=none; psd=n", "example.com": "v=DMARC1; p=reject"},
         "a.b.example.com", "b.example.com"),
        ({"example.co.jp": "v=DMARC1; p=none", "co.jp": "v=DMARC1; p=reject; psd=y"},
         "mail.example.co.jp", "example.co.jp"),
        ({"co.jp": "v=DMARC1; p=reject; psd=y"}, "shop.example.co.jp", "example.co.jp"),
        ({"b.example.com": "v=DMARC1; p=none", "example.com": "v=DMARC1; p=reject"},
         "a.b.example.com", "example.com"),
    ],
    ids=["fewest-labels", "no-records", "psd-y-above", "psd-n", "psd-y-jp", "psd-only",
         "two-without-psd"],
)  # fmt: skip
def test_organizational_domain_by_tree_walk(records: dict[str, str], name: str, org: str) -> None:
    """T34: the organisational domain follows RFC 9989's tree walk, not a suffix list."""
    assert run_sync(organizational_domain_steps(name), zone(records)) == org


def test_several_records_at_a_name_are_discarded() -> None:
    """T34: two DMARC records at one name count as none."""
    z = zone({"example.com": "v=DMARC1; p=reject"})
    z.add("_dmarc.example.com", "TXT", "v=DMARC1; p=none")
    assert check_dmarc("example.com", z, dkim_domains=["example.com"]).result == "none"


def test_policy_discovery_and_alignment() -> None:
    """T34: strict and relaxed alignment of DKIM and SPF identifiers."""
    relaxed = zone({"example.com": "v=DMARC1; p=reject"})
    strict = zone({"example.com": "v=DMARC1; p=reject; adkim=s; aspf=s"})
    # Same name: aligned either way.
    assert check_dmarc("example.com", strict, dkim_domains=["example.com"]).result == "pass"
    # Parent/child: relaxed only.
    outcome = check_dmarc("news.example.com", relaxed, dkim_domains=["example.com"])
    assert (outcome.result, outcome.dkim_aligned) == ("pass", ("example.com",))
    assert outcome.policy_domain == "example.com"
    assert check_dmarc("news.example.com", strict, dkim_domains=["example.com"]).result == "fail"
    # SPF through the bounce domain.
    spf = check_dmarc("example.com", relaxed, spf_domain="bounce.example.com", spf_pass=True)
    assert (spf.result, spf.spf_aligned) == ("pass", True)
    assert check_dmarc("example.com", strict, spf_domain="bounce.example.com",
                       spf_pass=True).result == "fail"  # fmt: skip
    # An SPF fail never aligns; another organisation never aligns.
    assert check_dmarc("example.com", relaxed, spf_domain="example.com").result == "fail"
    other = check_dmarc("example.com", relaxed, dkim_domains=["esp.example.net"])
    assert (other.result, other.disposition) == ("fail", "reject")


def test_relaxed_alignment_uses_the_psd_boundary() -> None:
    """T34: two customers under a public suffix that says psd=y do not align."""
    z = zone({"co.jp": "v=DMARC1; p=none; psd=y", "shop.co.jp": "v=DMARC1; p=reject"})
    outcome = check_dmarc("shop.co.jp", z, dkim_domains=["evil.co.jp"])
    assert outcome.result == "fail"
    assert outcome.organizational_domain == "shop.co.jp"


def test_subdomain_and_nonexistent_policies() -> None:
    """T34: sp applies to existing subdomains, np to non-existent ones, p to the domain."""
    records = {"example.com": "v=DMARC1; p=quarantine; sp=none; np=reject"}
    live = zone(records, www_example_com=[("A", "192.0.2.1")])
    assert check_dmarc("example.com", live).policy == "quarantine"
    assert check_dmarc("www.example.com", live).policy == "none"
    ghost = check_dmarc("ghost.example.com", live)
    assert (ghost.policy, ghost.disposition) == ("reject", "reject")


def test_testing_mode_lowers_the_disposition() -> None:
    """T34: t=y asks for one step less: reject becomes quarantine."""
    outcome = check_dmarc("example.com", zone({"example.com": "v=DMARC1; p=reject; t=y"}))
    assert (outcome.result, outcome.policy, outcome.disposition) == (
        "fail", "reject", "quarantine",
    )  # fmt: skip
    assert outcome.testing


def test_no_record_and_dns_failure() -> None:
    """T34: no record gives none; a DNS timeout gives temperror."""
    assert check_dmarc("example.org", zone({})).result == "none"
    timeout = ZoneLookup(timeouts=["_dmarc.example.org"])
    assert check_dmarc("example.org", timeout).result == "temperror"


async def test_async_lookup() -> None:
    """T34: the DMARC check runs with a coroutine lookup."""
    z = zone({"example.com": "v=DMARC1; p=reject"})
    outcome = await check_dmarc_async("example.com", z.aio, dkim_domains=["example.com"])
    assert outcome.result == "pass"


def test_author_domain_needs_exactly_one_from() -> None:
    """T32/T34: the author domain is taken only from a message with one From address."""
    assert author_domain(b"From: =?UTF-8?B?5bGx55Sw?= <Taro@Example.JP>\r\n\r\nx") == "example.jp"
    assert author_domain(b"From: a@example.com\r\nFrom: b@example.org\r\n\r\nx") is None
    assert author_domain(b"From: a@example.com, b@example.org\r\n\r\nx") is None
    assert author_domain(b"Subject: no from\r\n\r\nx") is None
