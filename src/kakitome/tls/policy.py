"""TLS policy levels (Postfix's vocabulary) and their resolution for a destination.

A policy is data: the per-domain table in the settings, then the default level. DANE,
MTA-STS and the per-host history refine this per MX host in ``tls.resolution``; each
result records where it came from, so the receipt can say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class TLSLevel(StrEnum):
    NONE = "none"  # never STARTTLS
    MAY = "may"  # STARTTLS when offered; plaintext when not, or when the handshake fails
    ENCRYPT = "encrypt"  # TLS >= 1.2 required, certificate not checked
    VERIFY = "verify"  # TLS required, certificate chain trusted and name matches the MX name
    SECURE = "secure"  # as verify, but the name must match the next-hop domain
    DANE = "dane"  # DANE when usable TLSA exists, else may (set by resolution)
    DANE_ONLY = "dane-only"  # DANE required; stays dane-only when TLSA is found (T45)

    @property
    def mandatory(self) -> bool:
        """TLS required, never plaintext. As a host's level, ``dane`` means usable TLSA
        records were found, which makes TLS mandatory (RFC 7672 §2.2): resolution turns a
        table or default ``dane`` without them into ``may``. Whether plaintext is allowed
        is decided in one place, ``tls.plaintext``, which also weighs MTA-STS, REQUIRETLS
        and the host's history."""
        return self not in (TLSLevel.NONE, TLSLevel.MAY)

    @property
    def dane(self) -> bool:
        """DANE levels: with usable TLSA records the host is reached through ``tls.dane``."""
        return self in (TLSLevel.DANE, TLSLevel.DANE_ONLY)

    @property
    def verifies(self) -> bool:
        return self in (TLSLevel.VERIFY, TLSLevel.SECURE, TLSLevel.DANE_ONLY)


class PolicySource(StrEnum):
    TABLE = "table"
    DANE = "dane"
    MTA_STS = "mta-sts"
    HISTORY = "history"
    DEFAULT = "default"
    # The message's "TLS-Required: No" header lowered the policy to opportunistic (T30).
    HEADER = "tls-required-header"


@dataclass(frozen=True, slots=True)
class TLSPolicy:
    """The effective policy for one destination domain."""

    level: TLSLevel
    source: PolicySource
    # Names a verified certificate must match; empty means "the MX host name" (verify)
    # or "the next-hop domain" (secure, filled in by resolution).
    match_names: tuple[str, ...] = ()


def table_lookup(domain: str, table: Mapping[str, TLSLevel]) -> TLSLevel | None:
    """Look a domain up in a Postfix-style table: exact name, then ``.parent`` entries."""
    domain = domain.lower().rstrip(".")
    if domain in table:
        return table[domain]
    labels = domain.split(".")
    for i in range(1, len(labels)):
        key = "." + ".".join(labels[i:])
        if key in table:
            return table[key]
    return None


def resolve_tls_policy(domain: str, table: Mapping[str, TLSLevel], default: TLSLevel) -> TLSPolicy:
    """The effective policy from the table, else the default."""
    level = table_lookup(domain, table)
    if level is not None:
        names = (domain.lower(),) if level is TLSLevel.SECURE else ()
        return TLSPolicy(level, PolicySource.TABLE, names)
    names = (domain.lower(),) if default is TLSLevel.SECURE else ()
    return TLSPolicy(default, PolicySource.DEFAULT, names)
