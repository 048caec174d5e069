"""The TLS receipt: how one delivery attempt travelled (checklist item T8)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kakitome.tls.policy import PolicySource, TLSLevel


class PeerVerification(StrEnum):
    """Postfix's trust vocabulary for the peer certificate."""

    NONE = "none"  # no TLS
    ANONYMOUS = "anonymous"  # no certificate shown
    UNTRUSTED = "untrusted"  # certificate does not chain to a trust anchor
    TRUSTED = "trusted"  # chains to a trust anchor, name does not match
    VERIFIED = "verified"  # chains and the name matches


@dataclass(frozen=True, slots=True)
class TLSReceipt:
    used: bool
    version: str | None
    cipher: str | None
    verification: PeerVerification
    level: TLSLevel
    policy_source: PolicySource
    peer_certificate_sha256: str | None
    # A handshake failed and the message went in plaintext on a new connection (T6), or
    # the server refused STARTTLS.
    downgraded: bool = False
    # Why verification failed, in OpenSSL's words, when it did.
    verify_error: str | None = None
    # The RFC 8460 result of this TLS session: "success" or a result type such as
    # "certificate-expired"; None when no TLS session was attempted (level none).
    tlsrpt_result: str | None = None
    # Why this host looks STARTTLS-stripped (it offered STARTTLS before, or showed a
    # verified certificate, and does not now); None when nothing looks wrong.
    stripping_suspected: str | None = None
    # Why the message could go without TLS (the rule of ``tls.plaintext`` that allowed
    # it), when this session is plaintext; None for TLS sessions (T43).
    plaintext_reason: str | None = None

    @property
    def verified(self) -> bool:
        return self.verification is PeerVerification.VERIFIED

    def to_dict(self) -> dict[str, Any]:
        # Built by hand: dataclasses.asdict deep-copies and is the slowest part of
        # recording thousands of results.
        return {
            "used": self.used,
            "version": self.version,
            "cipher": self.cipher,
            "verified": self.verified,
            "verification": self.verification.value,
            "level": self.level.value,
            "policy_source": self.policy_source.value,
            "peer_certificate_sha256": self.peer_certificate_sha256,
            "downgraded": self.downgraded,
            "verify_error": self.verify_error,
            "tlsrpt_result": self.tlsrpt_result,
            "stripping_suspected": self.stripping_suspected,
            "plaintext_reason": self.plaintext_reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TLSReceipt:
        return cls(
            used=bool(data["used"]),
            version=data.get("version"),
            cipher=data.get("cipher"),
            verification=PeerVerification(data.get("verification", "none")),
            level=TLSLevel(data["level"]),
            policy_source=PolicySource(data["policy_source"]),
            peer_certificate_sha256=data.get("peer_certificate_sha256"),
            downgraded=bool(data.get("downgraded", False)),
            verify_error=data.get("verify_error"),
            tlsrpt_result=data.get("tlsrpt_result"),
            stripping_suspected=data.get("stripping_suspected"),
            plaintext_reason=data.get("plaintext_reason"),
        )
