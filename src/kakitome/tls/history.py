"""What we remember about each MX host's TLS, for STARTTLS-stripping detection.

Talks to: nothing; the agent reports what it saw and asks what to expect, and the TLS
state store (``tls.state``) keeps it.

Trusts: only our own observations. A host "offered STARTTLS" when its EHLO reply before
TLS listed it; a host "showed a verified certificate" when the chain verified and the
name matched. Within ``settings.stripping.window`` seconds of the last such observation,
a host that no longer offers STARTTLS, or whose certificate changed to one that does not
verify, is suspected of being stripped (a man in the middle removing STARTTLS or
presenting its own certificate): the receipt says so, an event is recorded, and with
``settings.stripping.defer`` the delivery defers instead of going in plaintext.

Whether a missing TLS session (STARTTLS hidden, refused, or a handshake broken after
the 220) is refused because of this memory is decided in ``tls.plaintext``, alike for
every way TLS can fail (T44); ``stripping_suspected`` here judges completed handshakes
(and keeps the text for a hidden STARTTLS).

Only opportunistic deliveries (``may``) consult this memory; hosts under DANE or MTA-STS
already refuse plaintext and are never remembered as "TLS-broken" (T40): the agent's
downgrade memories (plaintext after a failed handshake, unverified certificates) skip
them.

Limits: one small row per MX host; observations are written only when something
changed or the last write is older than ``REFRESH_SECONDS``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

REFRESH_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class HostHistory:
    mx_host: str
    # Last time the host offered STARTTLS (None: never seen).
    starttls_seen_at: float | None = None
    # The last certificate that verified (chain and name), and when it was seen.
    verified_sha256: str | None = None
    verified_seen_at: float | None = None
    # The last certificate seen at all.
    last_sha256: str | None = None
    updated_at: float = 0.0

    def expects_starttls(self, now: float, window: float) -> bool:
        return self.starttls_seen_at is not None and now - self.starttls_seen_at <= window

    def expects_verified(self, now: float, window: float) -> bool:
        return self.verified_seen_at is not None and now - self.verified_seen_at <= window


@dataclass(frozen=True, slots=True)
class Observation:
    """What one new connection showed."""

    offered_starttls: bool
    sha256: str | None = None
    verified: bool = False


def observe(
    previous: HostHistory | None, host: str, seen: Observation, now: float
) -> HostHistory | None:
    """The new history after an observation, or None when nothing needs writing."""
    old = previous or HostHistory(host)
    new = old
    if seen.offered_starttls:
        new = replace(new, starttls_seen_at=now)
    if seen.sha256 is not None:
        new = replace(new, last_sha256=seen.sha256)
        if seen.verified:
            new = replace(new, verified_sha256=seen.sha256, verified_seen_at=now)
    changed = (
        previous is None
        or (new.starttls_seen_at is None) != (old.starttls_seen_at is None)
        or new.last_sha256 != old.last_sha256
        or new.verified_sha256 != old.verified_sha256
        or now - old.updated_at > REFRESH_SECONDS
    )
    if not changed:
        return None
    return replace(new, updated_at=now)


def stripping_suspected(
    history: HostHistory | None,
    seen: Observation,
    *,
    now: float,
    window: float,
) -> str | None:
    """Why this observation looks like STARTTLS stripping, or None."""
    if history is None:
        return None
    if not seen.offered_starttls and history.expects_starttls(now, window):
        return (
            f"{history.mx_host} offered STARTTLS {int(now - (history.starttls_seen_at or now))} s "
            "ago and does not now"
        )
    if (
        seen.offered_starttls
        and seen.sha256 is not None
        and not seen.verified
        and seen.sha256 != history.verified_sha256
        and history.expects_verified(now, window)
    ):
        return (
            f"{history.mx_host} showed a verified certificate "
            f"{int(now - (history.verified_seen_at or now))} s ago; now a different one "
            "that does not verify"
        )
    return None


__all__ = ["HostHistory", "Observation", "observe", "stripping_suspected"]
