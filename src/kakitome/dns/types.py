"""Values the resolver returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MXHost:
    """One mail exchanger of a domain, with the addresses it resolved to (IPv6 first)."""

    name: str  # lower case, no trailing dot
    preference: int
    addresses: tuple[str, ...]
    # True when the domain had no MX and its own A/AAAA records stand in (RFC 5321 §5.1).
    implicit: bool = False


@dataclass(frozen=True, slots=True)
class MXResult:
    domain: str
    # In the order to try: by preference, shuffled among equals.
    hosts: tuple[MXHost, ...]
    # RFC 7505: a single "MX 0 ." means the domain accepts no mail.
    null_mx: bool = False
