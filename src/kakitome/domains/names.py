"""Sending-domain names: validate once, keep both forms.

A sending domain is a host name of at least two labels (``example.com``, ``mail.example.jp``,
``例え.jp``). Internationalised names are accepted and kept in both forms: the A-label form
(``xn--r8jz45g.jp``) is what DNS, DKIM ``d=`` and the database use; the U-label form is what
people are shown. Anything else (an address, an IP, a single label, a name with a space) is
refused with a ``DomainNameError`` that says what is wrong, before anything is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import idna

from kakitome.addresses import domain_to_ascii
from kakitome.errors import AddressError, InputError

__all__ = ["DomainName", "DomainNameError", "parse_domain_name"]


class DomainNameError(InputError):
    """A string that is not a domain we could send from."""


@dataclass(frozen=True, slots=True)
class DomainName:
    """A valid sending domain: ``ascii`` (A-labels, lower case) and ``unicode`` (U-labels)."""

    ascii: str
    unicode: str

    @property
    def is_idn(self) -> bool:
        return self.ascii != self.unicode

    def display(self) -> str:
        """``例え.jp (xn--r8jz45g.jp)`` for an IDN, the plain name otherwise."""
        return f"{self.unicode} ({self.ascii})" if self.is_idn else self.ascii

    def __str__(self) -> str:
        return self.ascii


def parse_domain_name(text: str) -> DomainName:
    """Validate ``text`` as a sending domain; ``DomainNameError`` in plain words if not."""
    given = text.strip()
    if "@" in given:
        raise DomainNameError(
            f"{text!r} is an address; give only the domain after the @ "
            f"({given.rpartition('@')[2] or 'example.com'})"
        )
    if any(c.isspace() for c in given):
        raise DomainNameError(f"{text!r} is not a domain name: it contains a space")
    if "://" in given or "/" in given:
        raise DomainNameError(f"{text!r} is a URL; give only the domain name, e.g. example.com")
    try:
        ascii_name = domain_to_ascii(given)
    except AddressError as exc:
        raise DomainNameError(f"{text!r} is not a domain name: {exc}") from None
    if "." not in ascii_name:
        raise DomainNameError(
            f"{text!r} is not a domain name one can send from: it needs at least two labels, "
            "such as example.com"
        )
    try:
        unicode_name = idna.decode(ascii_name)
    except (idna.IDNAError, UnicodeError) as exc:
        raise DomainNameError(f"{text!r} is not a valid internationalised name: {exc}") from None
    return DomainName(ascii_name, unicode_name)
