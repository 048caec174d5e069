"""VERP return paths: the envelope sender of signed mail, and how to read one back.

Format (for the inbound engineer: this is the whole contract)::

    bounce+<id>-<mac>@<return-path domain>

- ``<id>``: 16 characters of Crockford base32 (``0-9a-z`` without ``i l o u``), 80 random
  bits, drawn per message at injection;
- ``<mac>``: 8 characters of the same alphabet, the first 40 bits of
  HMAC-SHA256(verp key, ``"<id>@<return-path domain>"``); the key comes from
  ``KeyBox.verp_key`` (the DKIM key secret through HKDF), so nobody outside can make a
  return path we would accept;
- ``<return-path domain>``: ``<settings.domains.return_path_label>.<sending domain>``,
  e.g. ``bounce.example.com`` (its MX points at us, its SPF allows our sending IPs, and it
  is aligned with the From domain under relaxed DMARC).

The whole address is the message's envelope sender (``messages.sender``, indexed as
``ix_messages_sender``): a bounce to it finds its message with one indexed lookup, and the
failed recipient named in the DSN (``Final-Recipient``) finds the delivery, since there is
one delivery per recipient of a message. ``parse_return_path`` checks the form and the MAC
(in constant time) and returns the parts, or ``None`` for anything that is not ours.
Local parts are matched case-insensitively (some MTAs upper-case them).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

__all__ = ["LOCAL_PREFIX", "ReturnPath", "make_return_path", "parse_return_path"]

LOCAL_PREFIX = "bounce"
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_ID_CHARS = 16
_MAC_CHARS = 8
_FORM = re.compile(
    rf"{LOCAL_PREFIX}\+([{_ALPHABET}]{{{_ID_CHARS}}})-([{_ALPHABET}]{{{_MAC_CHARS}}})@(.+)"
)


@dataclass(frozen=True, slots=True)
class ReturnPath:
    """A return path we made: ``address`` is the envelope sender."""

    token: str
    domain: str

    @property
    def address(self) -> str:
        return f"{LOCAL_PREFIX}+{self.token}@{self.domain}"


def _b32(data: bytes, chars: int) -> str:
    value = int.from_bytes(data, "big")
    out = []
    for _ in range(chars):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def _mac(key: bytes, ident: str, domain: str) -> str:
    digest = hmac.new(key, f"{ident}@{domain}".encode("ascii"), hashlib.sha256).digest()
    return _b32(digest[:5], _MAC_CHARS)


def make_return_path(key: bytes, return_path_domain: str) -> ReturnPath:
    """A fresh return path at ``return_path_domain`` (A-labels, lower case)."""
    ident = _b32(secrets.token_bytes(10), _ID_CHARS)
    return ReturnPath(f"{ident}-{_mac(key, ident, return_path_domain)}", return_path_domain)


def parse_return_path(key: bytes, address: str) -> ReturnPath | None:
    """The return path in ``address`` if we made it (form and MAC check), else ``None``."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    match = _FORM.fullmatch(f"{local.lower()}{at}{domain.lower().rstrip('.')}")
    if match is None:
        return None
    ident, mac, rp_domain = match.groups()
    if not hmac.compare_digest(mac, _mac(key, ident, rp_domain)):
        return None
    return ReturnPath(f"{ident}-{mac}", rp_domain)
