"""May this MX host be reached without TLS? The one place that decides (T43-T45).

Talks to: nothing. It is a pure function of data: the host's resolved policy
(``tls.resolution.HostPolicy``: level, source, usable TLSA records, MTA-STS mode, and the
host's TLS history as a value, not a store), whether the message requires TLS
(REQUIRETLS), the stripping settings and the time.

Every path of the delivery agent that could end with a message sent in plaintext asks
``plaintext_verdict`` first, whatever the reason TLS did not happen: level ``none``,
STARTTLS not offered, STARTTLS refused (454, 502, 421 or any reply but 220), a handshake
that failed for a reason other than the certificate (the peer closed the connection or
sent bytes that are not TLS after its 220), a plaintext retry on a new connection after
such a failure (T6), and a pooled plaintext connection about to be reused. The verdict
does not depend on *how* TLS failed: an attacker on the path picks the cheapest way, so
every way must be refused alike (T44).

Rules, the first that applies wins:

1. REQUIRETLS: the message must not travel in plaintext (RFC 8689);
2. ``TLS-Required: No`` (source ``tls-required-header``): the sender accepts plaintext
   (RFC 8689 §5, T30);
3. usable TLSA records (level ``dane`` or ``dane-only`` with records): TLS is mandatory
   for the host (RFC 7672 §2.2, T13);
4. ``dane-only`` without usable TLSA (the host is skipped anyway, T45);
5. TLSA records that are all unusable: TLS without authentication is mandatory (T14);
6. MTA-STS ``enforce`` (T23);
7. the levels ``encrypt``, ``verify`` and ``secure`` (T7);
8. level ``none``: plaintext allowed (the operator's choice);
9. a history of TLS for the host within ``stripping.window`` (it offered STARTTLS and
   showed a certificate, or a verified certificate) — or, for a host with none of its
   own, for another MX host of the destination (``sibling_history``: a backup MX is no
   way around it) — while ``stripping.enabled``:
   possible stripping — refused when ``stripping.defer``, else allowed and flagged (T44);
10. ``may`` with none of the above: plaintext allowed.

Trusts: the resolution's findings and our own observations only; nothing the peer says
can turn a refusal into an allowance.
"""

from __future__ import annotations

from dataclasses import dataclass

from kakitome.config import StrippingSettings
from kakitome.tls.history import HostHistory
from kakitome.tls.policy import PolicySource, TLSLevel
from kakitome.tls.resolution import HostPolicy


@dataclass(frozen=True, slots=True)
class PlaintextVerdict:
    """Whether plaintext is allowed, and the rule that decided, in words.

    ``reason`` says why plaintext is allowed (it goes into the receipt) or what requires
    TLS (it goes into the deferral). ``stripping`` is set when the host's history makes
    the missing TLS look like STARTTLS stripping, whether or not it was refused.
    """

    allowed: bool
    reason: str
    stripping: str | None = None


def tls_history(history: HostHistory | None, *, now: float, window: float) -> str | None:
    """What the host showed of TLS within the window, in words; None when nothing."""
    if history is None:
        return None
    seen = []
    if history.expects_verified(now, window):
        ago = int(now - (history.verified_seen_at or now))
        seen.append(f"showed a verified certificate {ago} s ago")
    if history.expects_starttls(now, window):
        ago = int(now - (history.starttls_seen_at or now))
        seen.append(f"offered STARTTLS {ago} s ago")
    return " and ".join(seen) or None


def plaintext_verdict(
    hp: HostPolicy,
    *,
    failure: str,
    requiretls: bool,
    stripping: StrippingSettings,
    now: float,
) -> PlaintextVerdict:
    """May ``hp.mx_host`` get a message without TLS, now that TLS did not happen?

    ``failure`` says how TLS failed ("does not offer STARTTLS", "refused STARTTLS: 454
    ..."); it only colours the stripping text, never the decision. ``requiretls`` is true
    when every message that would use the connection carries REQUIRETLS.
    """
    host = hp.mx_host
    if requiretls:
        return PlaintextVerdict(False, "the message requires TLS (REQUIRETLS, RFC 8689)")
    if hp.source is PolicySource.HEADER:
        return PlaintextVerdict(
            True, "TLS-Required: No (RFC 8689 §5): the sender accepts plaintext"
        )
    if hp.level in (TLSLevel.DANE, TLSLevel.DANE_ONLY) and hp.tlsa:
        return PlaintextVerdict(
            False,
            f"DANE: {host} has usable DNSSEC-validated TLSA records, TLS is mandatory "
            "(RFC 7672 §2.2)",
        )
    if hp.level is TLSLevel.DANE_ONLY:
        return PlaintextVerdict(False, f"dane-only policy from the {hp.source.value} for {host}")
    if hp.source is PolicySource.DANE:
        return PlaintextVerdict(
            False,
            f"DANE: {host} has TLSA records, none usable: TLS without authentication is "
            "mandatory (RFC 7672 §2.2)",
        )
    if hp.source is PolicySource.MTA_STS and not hp.sts_testing:
        return PlaintextVerdict(False, f"MTA-STS policy in enforce mode for {host}")
    if hp.level.mandatory:
        return PlaintextVerdict(False, f"level {hp.level.value} from the {hp.source.value}")
    if hp.level is TLSLevel.NONE:
        return PlaintextVerdict(
            True, f"level none from the {hp.source.value}: STARTTLS is never used"
        )
    seen = None
    if stripping.enabled:
        seen = tls_history(hp.history, now=now, window=stripping.window)
        other = hp.sibling_history
        if seen is None and other is not None:
            theirs = tls_history(other, now=now, window=stripping.window)
            if theirs is not None:
                seen = (
                    f"has no TLS history, but {other.mx_host}, another MX host of the same "
                    f"destination, {theirs}"
                )
    if seen is not None:
        why = f"{host} {seen}; now it {failure}"
        if stripping.defer:
            return PlaintextVerdict(False, f"possible STARTTLS stripping: {why}", why)
        return PlaintextVerdict(
            True, f"stripping.defer is off: plaintext despite possible stripping ({why})", why
        )
    return PlaintextVerdict(
        True,
        f"level may from the {hp.source.value}: no history of TLS for {host}, and no DANE, "
        "MTA-STS enforce or REQUIRETLS",
    )


__all__ = ["PlaintextVerdict", "plaintext_verdict", "tls_history"]
