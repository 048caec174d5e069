"""Mailbox addresses: parse, validate, and put them into envelopes and headers.

What it trusts: nothing; every string comes from a user or client. What it enforces:

- RFC 5321 §4.5.3.1 path limits: local part ≤ 64 octets, domain ≤ 255 octets, and the
  whole address ≤ 254 octets (a reverse- or forward-path is ≤ 256 including ``<`` ``>``).
- Local part: an RFC 5322 dot-atom or quoted string. Non-ASCII local parts are allowed
  (RFC 6531) but make the message need SMTPUTF8; ``Mailbox.smtputf8`` says so.
- Domain: a host name; internationalised names are converted to their A-label
  (``xn--``) form with UTS #46 processing for the envelope. Address literals
  (``[192.0.2.1]``) are refused: a sending service has no business with them.
- No control characters anywhere, CR and LF above all (header and command injection).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.headerregistry import Address

import idna

from kakitome.errors import AddressError

MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_ADDRESS = 254
MAX_LABEL = 63
# A display name has no RFC limit; this one keeps headers sane.
MAX_DISPLAY_NAME = 256

# RFC 5322 atext, extended with every non-ASCII character (RFC 6532 UTF8-non-ascii).
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff"
_DOT_ATOM = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
# Quoted string content: printable ASCII but '"' and '\', or a backslash pair; no controls.
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A valid mailbox. ``domain`` is the lower-case A-label form used on the wire."""

    local_part: str
    domain: str
    display_name: str = ""

    @property
    def address(self) -> str:
        """The address for the SMTP envelope (``local@a-label.domain``)."""
        return f"{self.local_part}@{self.domain}"

    @property
    def smtputf8(self) -> bool:
        """True when the local part is not ASCII, so the transaction needs SMTPUTF8."""
        return not self.local_part.isascii()

    @property
    def unicode_domain(self) -> str:
        """The domain as people write it (U-labels), for display."""
        try:
            return idna.decode(self.domain)
        except idna.IDNAError:
            return self.domain

    @property
    def key(self) -> str:
        """Identity for de-duplication: the local part as given, the domain without case."""
        return f"{self.local_part}@{self.domain}"

    def header_address(self) -> Address:
        """An ``email.headerregistry.Address`` for From/To/Cc/Reply-To headers.

        The library quotes the local part and encodes a non-ASCII display name as RFC 2047
        encoded words (or leaves it in UTF-8 under an SMTPUTF8 policy).
        """
        local = self.local_part
        if local.startswith('"'):
            local = _unquote(local)
        return Address(display_name=self.display_name, username=local, domain=self.domain)

    def __str__(self) -> str:
        return self.address


def domain_to_ascii(domain: str) -> str:
    """Validate a host name and return its lower-case A-label form; AddressError if bad."""
    _reject_controls(domain, "domain")
    name = domain.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise AddressError("the domain is empty")
    if name.startswith("["):
        raise AddressError(f"address literals such as {domain!r} are not accepted")
    if name.isascii():
        ascii_name = name.lower()
    else:
        try:
            ascii_name = idna.encode(name, uts46=True).decode("ascii").lower()
        except (idna.IDNAError, UnicodeError) as exc:
            raise AddressError(
                f"{domain!r} is not a valid internationalised domain: {exc}"
            ) from exc
    if len(ascii_name) > MAX_DOMAIN:
        raise AddressError(f"the domain is longer than {MAX_DOMAIN} characters")
    for label in ascii_name.split("."):
        if not label:
            raise AddressError(f"the domain {domain!r} has an empty label (two dots in a row)")
        if len(label) > MAX_LABEL:
            raise AddressError(f"a label of the domain {domain!r} is longer than {MAX_LABEL}")
        if not _LDH_LABEL.fullmatch(label):
            raise AddressError(
                f"the domain {domain!r} may only contain letters, digits and inner hyphens"
            )
    if ascii_name.rsplit(".", 1)[-1].isdigit():
        raise AddressError(f"{domain!r} looks like an IP address, not a domain")
    return ascii_name


def parse_address(text: str) -> Mailbox:
    """Parse a bare address (``user@example.jp``, optionally in ``<>``) into a Mailbox."""
    _reject_controls(text, "address")
    value = text.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    if not value:
        raise AddressError("the address is empty")
    if "@" not in value:
        raise AddressError(f"{text!r} has no '@': an address is local-part@domain")
    local, _, domain = value.rpartition("@")
    if not local:
        raise AddressError(f"{text!r} has nothing before the '@'")
    if not domain:
        raise AddressError(f"{text!r} has nothing after the '@'")
    if not (_DOT_ATOM.fullmatch(local) or _QUOTED.fullmatch(local)):
        raise AddressError(
            f"the local part {local!r} is not valid (spaces, '@', '..', commas and similar "
            "characters need quoting, and a dot may not start or end it)"
        )
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError(f"the part before '@' is longer than {MAX_LOCAL_PART} octets")
    ascii_domain = domain_to_ascii(domain)
    if len(local.encode("utf-8")) + 1 + len(ascii_domain) > MAX_ADDRESS:
        raise AddressError(f"the address is longer than {MAX_ADDRESS} octets")
    return Mailbox(local, ascii_domain)


def parse_mailbox(text: str) -> Mailbox:
    """Parse ``Display Name <user@example.jp>``, ``"Name" <addr>`` or a bare address.

    The display name may be any Unicode text (Japanese names are common); it is encoded
    when the header is written.
    """
    _reject_controls(text, "address")
    value = text.strip()
    if value.endswith(">") and "<" in value:
        name, _, rest = value.rpartition("<")
        return with_display_name(parse_address(rest[:-1]), name)
    return parse_address(value)


def with_display_name(mailbox: Mailbox, name: str) -> Mailbox:
    """The same mailbox with a display name (quotes around the name are removed)."""
    _reject_controls(name, "display name")
    name = name.strip()
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        name = _unquote(name)
    if len(name) > MAX_DISPLAY_NAME:
        raise AddressError(f"the display name is longer than {MAX_DISPLAY_NAME} characters")
    return Mailbox(mailbox.local_part, mailbox.domain, name)


def _unquote(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted[1:-1])


def _reject_controls(text: str, what: str) -> None:
    if not isinstance(text, str):
        raise AddressError(f"the {what} must be text")
    if "\r" in text or "\n" in text:
        raise AddressError(f"the {what} contains a line break (CR or LF), which is not allowed")
    if _CONTROL.search(text):
        raise AddressError(f"the {what} contains a control character")
