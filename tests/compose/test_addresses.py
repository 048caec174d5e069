"""Mailbox parsing and validation."""

from __future__ import annotations

import pytest

from kakitome.addresses import domain_to_ascii, parse_address, parse_mailbox
from kakitome.errors import AddressError


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("user@example.jp", "user@example.jp"),
        ("First.Last+tag@Example.COM", "First.Last+tag@example.com"),
        ("<user@example.jp>", "user@example.jp"),
        ('"with space"@example.org', '"with space"@example.org'),
        ("user@example.jp.", "user@example.jp"),
    ],
)
def test_valid_addresses(text: str, address: str) -> None:
    """Valid addresses parse; the domain is lower-cased, the local part kept as given."""
    assert parse_address(text).address == address


def test_idn_domain_becomes_a_label() -> None:
    """An internationalised domain is converted to its A-label for the envelope."""
    box = parse_address("info@日本語.jp")
    assert box.domain == "xn--wgv71a119e.jp"
    assert box.unicode_domain == "日本語.jp"
    assert not box.smtputf8


def test_utf8_local_part_needs_smtputf8() -> None:
    """A non-ASCII local part is accepted but flags the address as needing SMTPUTF8."""
    box = parse_address("やまだ@example.jp")
    assert box.smtputf8
    assert box.address == "やまだ@example.jp"


def test_display_name_parsing() -> None:
    """Display names, quoted or not and in Japanese, are kept apart from the address."""
    box = parse_mailbox('"山田, 太郎" <taro@example.jp>')
    assert (box.display_name, box.address) == ("山田, 太郎", "taro@example.jp")
    assert parse_mailbox("株式会社カキトメ <info@example.jp>").display_name == "株式会社カキトメ"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("x" * 65 + "@example.jp", "longer than 64"),
        ("user@" + "a" * 64 + ".jp", "longer than 63"),
        ("x" * 64 + "@" + ".".join(["a" * 63] * 3) + ".jp", "longer than 254"),
        ("user@" + ".".join(["a" * 63] * 4) + ".jp", "longer than 255"),
    ],
)
def test_too_long(text: str, reason: str) -> None:
    """RFC 5321 length limits: local part 64, label 63, address 254, domain 255."""
    with pytest.raises(AddressError, match=reason):
        parse_address(text)


@pytest.mark.parametrize(
    "text",
    [
        "user@example.jp\r\nBcc: victim@example.com",
        "user\n@example.jp",
        "Name\r\n <user@example.jp>",
        "user@exa\rmple.jp",
    ],
)
def test_line_breaks_refused(text: str) -> None:
    """CR or LF anywhere in an address or display name is refused (header injection)."""
    with pytest.raises(AddressError, match="line break"):
        parse_mailbox(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plainaddress",
        "@example.jp",
        "user@",
        "a..b@example.jp",
        ".user@example.jp",
        "two words@example.jp",
        "user@exa_mple.jp",
        "user@-example.jp",
        "user@example..jp",
        "user@[192.0.2.1]",
        "user@192.0.2.1",
        "a@b@example.jp",
    ],
)
def test_bad_syntax(text: str) -> None:
    """Malformed addresses raise AddressError with a reason."""
    with pytest.raises(AddressError) as info:
        parse_mailbox(text)
    assert str(info.value)


def test_domain_to_ascii_rejects_invalid_idn() -> None:
    """A domain that is not valid IDNA is refused in plain words."""
    with pytest.raises(AddressError, match="internationalised domain"):
        domain_to_ascii("xn--zz.jp\u200d日本")
