"""DKIM key pairs: generate, name (dated selectors), serialise, load, publish.

Every sending domain gets two keys, RSA-2048 and Ed25519 (RFC 8463), and signs with both.
This module makes the keys and the exact DNS TXT values to publish for them; it keeps no
state and touches no storage (the caller decides where a PEM goes: file mode 0600 or
encrypted with a passphrase from the settings).

Selectors are dated: ``k<yyyymm><r|e>[<n>]``, for example ``k202611r`` (RSA made in
November 2026) and ``k202611e`` (its Ed25519 twin); a second rotation in the same month gets
a sequence number (``k202611r2``). The date says at a glance how old a published key is.

Limits (T32): we generate RSA keys of at least 2048 bits; we load RSA keys of at least 1024
bits (RFC 8301 §3.2: verifiers must not accept smaller ones, so signing with them is
pointless); anything else (EC P-256, DSA, ...) is refused with a clear ``DKIMKeyError``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from kakitome.errors import InputError

__all__ = [
    "GENERATED_RSA_BITS",
    "MIN_RSA_BITS",
    "TXT_STRING_MAX",
    "DKIMKeyError",
    "DKIMKeyPair",
    "KeyType",
    "PrivateKey",
    "ascii_domain",
    "check_rsa_size",
    "dkim_txt_value",
    "ed25519_key_from_seed",
    "generate_key_pair",
    "key_type_of",
    "load_private_key",
    "load_private_key_file",
    "make_selector",
    "parse_selector",
    "private_key_pem",
    "public_key_b64",
    "split_txt",
    "zone_file_record",
]

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits, SHOULD use 2048.
MIN_RSA_BITS = 1024
GENERATED_RSA_BITS = 2048
# RFC 1035 §3.3: a <character-string> holds at most 255 octets.
TXT_STRING_MAX = 255

_SELECTOR = re.compile(r"k(\d{4})(\d{2})([re])(\d*)")


class DKIMKeyError(InputError):
    """A DKIM key that cannot be read, is of a type we do not use, or is too weak."""


class KeyType(StrEnum):
    """The two key types we sign with, named as in the DKIM key record's ``k=`` tag."""

    RSA = "rsa"
    ED25519 = "ed25519"

    @property
    def algorithm(self) -> str:
        """The DKIM-Signature ``a=`` value this key signs with."""
        return "rsa-sha256" if self is KeyType.RSA else "ed25519-sha256"

    @property
    def selector_letter(self) -> str:
        return "r" if self is KeyType.RSA else "e"


@dataclass(frozen=True, slots=True)
class DKIMKeyPair:
    """A private key with the selector it is published under."""

    selector: str
    private_key: PrivateKey

    @property
    def key_type(self) -> KeyType:
        return key_type_of(self.private_key)

    def private_pem(self, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted with ``passphrase`` when one is given."""
        return private_key_pem(self.private_key, passphrase)

    def txt_value(self) -> str:
        """The TXT record value, e.g. ``v=DKIM1; k=ed25519; p=11qY...``."""
        return dkim_txt_value(self.private_key.public_key())

    def record_name(self, domain: str) -> str:
        """Where the record goes: ``<selector>._domainkey.<domain>`` (A-labels)."""
        return f"{self.selector}._domainkey.{ascii_domain(domain)}"

    def zone_file_record(self, domain: str, ttl: int | None = None) -> str:
        """The record as a zone-file line, with the value split into ≤255-octet strings."""
        return zone_file_record(self.record_name(domain) + ".", self.txt_value(), ttl)


def key_type_of(key: PrivateKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> KeyType:
    """``KeyType.RSA`` or ``KeyType.ED25519``; ``DKIMKeyError`` for anything else."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return KeyType.RSA
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    raise DKIMKeyError(f"unsupported DKIM key type {type(key).__name__}; use RSA or Ed25519")


def ascii_domain(domain: str) -> str:
    """A domain in lower-case A-labels, without a trailing dot (IDN allowed on input)."""
    name = domain.strip().rstrip(".")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise DKIMKeyError(f"{domain!r} is not a valid domain name: {exc}") from None
    return name.lower()


def make_selector(key_type: KeyType | str, when: date | datetime, sequence: int = 1) -> str:
    """A dated selector: ``k202611r`` for RSA, ``k202611e`` for Ed25519; ``sequence`` > 1
    (a second rotation in the same month) is appended: ``k202611r2``."""
    kind = KeyType(key_type)
    if sequence < 1:
        raise ValueError("selector sequence numbers start at 1")
    suffix = "" if sequence == 1 else str(sequence)
    return f"k{when.year:04d}{when.month:02d}{kind.selector_letter}{suffix}"


def parse_selector(selector: str) -> tuple[int, int, KeyType, int] | None:
    """``(year, month, key type, sequence)`` of a selector made by ``make_selector``, or
    ``None`` for any other selector (keys imported from elsewhere keep their names)."""
    match = _SELECTOR.fullmatch(selector)
    if match is None:
        return None
    year, month, letter, seq = match.groups()
    kind = KeyType.RSA if letter == "r" else KeyType.ED25519
    return int(year), int(month), kind, int(seq) if seq else 1


def generate_key_pair(
    key_type: KeyType | str,
    when: date | datetime,
    *,
    sequence: int = 1,
    rsa_bits: int = GENERATED_RSA_BITS,
) -> DKIMKeyPair:
    """A fresh key with its dated selector. RSA keys are ``rsa_bits`` (≥ 2048) long."""
    kind = KeyType(key_type)
    key: PrivateKey
    if kind is KeyType.RSA:
        if rsa_bits < GENERATED_RSA_BITS:
            raise DKIMKeyError(
                f"refusing to generate a {rsa_bits}-bit RSA key; use at least "
                f"{GENERATED_RSA_BITS} bits"
            )
        key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    return DKIMKeyPair(make_selector(kind, when, sequence), key)


def ed25519_key_from_seed(seed_b64: str) -> ed25519.Ed25519PrivateKey:
    """An Ed25519 key from its base64 32-byte seed (the form RFC 8463 and dkimpy use)."""
    try:
        seed = base64.b64decode(seed_b64, validate=True)
        return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    except ValueError as exc:
        raise DKIMKeyError(f"not a base64 Ed25519 seed of 32 bytes: {exc}") from None


def private_key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted (best available scheme) when ``passphrase`` is given."""
    encryption: serialization.KeySerializationEncryption
    if passphrase:
        encryption = serialization.BestAvailableEncryption(passphrase)
    else:
        encryption = serialization.NoEncryption()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def load_private_key(
    pem: bytes, passphrase: bytes | None = None, *, source: str = "key"
) -> PrivateKey:
    """Parse a PEM private key (PKCS#8 or PKCS#1), checking type and size.

    Every failure is a ``DKIMKeyError`` that says what is wrong with ``source`` (a file
    name, or "key") and never includes key material.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase or None)
    except TypeError:
        if passphrase:
            raise DKIMKeyError(f"{source} is not encrypted, but a passphrase was given") from None
        raise DKIMKeyError(f"{source} is encrypted; a passphrase is needed") from None
    except UnsupportedAlgorithm:
        raise DKIMKeyError(f"{source} uses an unsupported key algorithm") from None
    except ValueError:
        if passphrase:
            raise DKIMKeyError(
                f"{source} cannot be decrypted: wrong passphrase, or not a PEM private key"
            ) from None
        raise DKIMKeyError(f"{source} is not a readable PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        check_rsa_size(key.key_size, source)
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise DKIMKeyError(
        f"{source} is a {type(key).__name__.removeprefix('_')} key; DKIM keys here are RSA "
        "or Ed25519"
    )


def load_private_key_file(path: str | Path, passphrase: bytes | None = None) -> PrivateKey:
    """``load_private_key`` on a file; an unreadable file is a ``DKIMKeyError`` too."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DKIMKeyError(f"cannot read DKIM key file {path}: {exc.strerror}") from None
    return load_private_key(data, passphrase, source=f"DKIM key file {path}")


def check_rsa_size(bits: int, source: str = "key") -> None:
    """T32 / RFC 8301 §3.2: RSA keys under 1024 bits are refused."""
    if bits < MIN_RSA_BITS:
        raise DKIMKeyError(
            f"{source} is a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required "
            "(RFC 8301), 2048 recommended"
        )


def public_key_b64(public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> str:
    """The ``p=`` value: SubjectPublicKeyInfo DER for RSA (what every verifier reads),
    the raw 32-byte key for Ed25519 (RFC 8463 §4.2)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        der = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(der).decode("ascii")


def dkim_txt_value(public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> str:
    """The whole DKIM key record value (RFC 6376 §3.6.1), one string."""
    kind = key_type_of(public_key)
    return f"v=DKIM1; k={kind.value}; p={public_key_b64(public_key)}"


def split_txt(value: str, limit: int = TXT_STRING_MAX) -> list[str]:
    """Split a TXT value into character-strings of at most ``limit`` octets; a resolver
    joins them back without separators (RFC 6376 §3.6.2.2, RFC 7208 §3.3)."""
    data = value.encode("ascii")
    if not data:
        return [""]
    return [data[i : i + limit].decode("ascii") for i in range(0, len(data), limit)]


def zone_file_record(name: str, value: str, ttl: int | None = None) -> str:
    """``name [ttl] IN TXT ( "..." "..." )`` — quoted strings of ≤255 octets."""
    strings = " ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
                       for s in split_txt(value))  # fmt: skip
    ttl_part = f" {ttl}" if ttl is not None else ""
    return f"{name}{ttl_part} IN TXT ( {strings} )"
