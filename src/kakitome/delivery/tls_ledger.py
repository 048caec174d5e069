"""TLS bookkeeping of one delivery attempt: TLS-RPT session counts, what each MX host
showed (for STARTTLS-stripping detection), suspected interception, and writing it all down.

``TLSLedger`` is what one attempt (one ``deliver()`` call, one policy: strict or relaxed)
has learned: the TLS-RPT session records (T26), each host's ``Observation`` (did it offer
STARTTLS, which certificate, did it verify), the addresses whose handshake failed where
plaintext was allowed (T6: plaintext on the next connection), and whether every message
carries REQUIRETLS. ``TLSBook`` fills it in and, at the end of the batch, writes it out.

Talks to: the ``TLSState`` (TLS-RPT counts, host histories, ``tls-stripping-suspected``
events) — and nothing on the network.

Trusts: the observations the connection code hands it (``delivery.connect``); the host
histories ``tls.resolution`` attached to each ``HostPolicy`` (else the state's own).
Storage problems never fail a delivery: they are logged.

Limits: one session record per new TLS session attempt; one observation per host per
attempt (the last wins); histories only written while ``settings.stripping.enabled``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kakitome.config import Settings
from kakitome.tls.history import Observation, observe, stripping_suspected
from kakitome.tls.receipt import PeerVerification
from kakitome.tls.resolution import DestinationPolicy, HostPolicy
from kakitome.tls.state import TLSState
from kakitome.tls.tlsrpt import (
    SUCCESS,
    VALIDATION_FAILURE,
    SessionRecord,
    classify_certificate,
    utc_day,
)

# The agent's logger: its lines keep the name they had before the agent was split.
log = logging.getLogger("kakitome.delivery.agent")


@dataclass
class TLSLedger:
    """What the connections of one attempt have learned about TLS so far."""

    domain: str  # the destination, for events
    # Every message of the attempt carries REQUIRETLS: a plaintext connection could serve
    # none of them (mixed batches are guarded per message, T29).
    requiretls: bool = False
    # IPs whose handshake failed where plaintext was allowed (T6): plaintext next time.
    tls_broken: set[str] = field(default_factory=set)
    sessions: list[SessionRecord] = field(default_factory=list)
    observations: dict[str, Observation] = field(default_factory=dict)

    def observe(self, host: str, seen: Observation) -> None:
        self.observations[host] = seen


def policy_result(
    hp: HostPolicy, verification: PeerVerification, verify_error: str | None
) -> tuple[str | None, str]:
    """The RFC 8460 result of a completed handshake under this host's policy."""
    if hp.report.type == "no-policy-found":
        return None, ""  # without a policy, an encrypted session is a success
    if hp.sts_mismatch:
        return VALIDATION_FAILURE, "mx-mismatch"
    if verification is not PeerVerification.VERIFIED:
        return classify_certificate(verification, verify_error), ""
    return None, ""


class TLSBook:
    """Counts sessions into ledgers and writes ledgers to the TLS state."""

    def __init__(
        self, settings: Callable[[], Settings], state: TLSState, clock: Callable[[], float]
    ) -> None:
        self._settings = settings  # read at each use: settings may be reloaded
        self.state = state
        self.clock = clock

    def count(
        self,
        ledger: TLSLedger,
        hp: HostPolicy,
        ip: str,
        result: str | None,
        reason_code: str = "",
    ) -> str:
        """Count one session attempt for TLS-RPT (T26); returns the receipt's word for it."""
        if result is None and hp.sts_failure is not None:
            result = hp.sts_failure  # the policy could not be fetched: a failed session
        ledger.sessions.append(
            SessionRecord(
                day=utc_day(self.clock()),
                policy=hp.report,
                mx_host=hp.mx_host,
                receiving_ip=ip,
                result_type=result,
                sending_ip=self._settings().delivery.source_address or "",
                reason_code=reason_code,
            )
        )
        return result or SUCCESS

    async def suspect_stripping(
        self, ledger: TLSLedger, hp: HostPolicy, ip: str, seen: Observation
    ) -> str | None:
        """After a completed handshake: does the certificate look intercepted (a verified
        one replaced by one that does not verify)? Records the event. Missing TLS is the
        decision point's business (``delivery.downgrade``)."""
        stripping = self._settings().stripping
        if hp.history is None or not stripping.enabled:
            return None
        now = self.clock()
        why = stripping_suspected(hp.history, seen, now=now, window=stripping.window)
        if why is not None:
            await self.stripping_event(ledger, hp, ip, why, seen.sha256)
        return why

    async def stripping_event(
        self, ledger: TLSLedger, hp: HostPolicy, ip: str, why: str, sha256: str | None
    ) -> None:
        """Log and record a ``tls-stripping-suspected`` event; a storage problem only logs."""
        data = {
            "domain": ledger.domain,
            "mx_host": hp.mx_host,
            "ip": ip,
            "reason": why,
            "deferred": self._settings().stripping.defer,
            "certificate_sha256": sha256,
        }
        log.warning("possible STARTTLS stripping: %s", why)
        try:
            await self.state.add_tls_event("tls-stripping-suspected", data, self.clock())
        except Exception as exc:
            log.warning("could not record the stripping event: %s", exc)

    async def remember(self, destination: DestinationPolicy, ledgers: Sequence[TLSLedger]) -> None:
        """Write TLS-RPT counts and host observations; a storage problem only logs."""
        sessions = [s for ledger in ledgers for s in ledger.sessions]
        now = self.clock()
        try:
            if sessions:
                await self.state.record_sessions(sessions)
            if not self._settings().stripping.enabled:
                return
            for ledger in ledgers:
                for host, seen in ledger.observations.items():
                    hp = destination.host(host)
                    previous = hp.history or await self.state.get_host_history(host)
                    updated = observe(previous, host, seen, now)
                    if updated is not None:
                        await self.state.put_host_history(updated)
        except Exception as exc:
            log.warning("could not record TLS observations for %s: %s", destination.domain, exc)


__all__ = ["TLSBook", "TLSLedger", "policy_result"]
