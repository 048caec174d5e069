"""Outcomes: how replies and failures become per-recipient results, and the TLS receipt.

Talks to: nothing. Pure functions and one exception type, used by the batch loop
(``delivery.agent``) and the secure connection (``delivery.connect``,
``delivery.downgrade``).

Trusts: the replies it is given — a server's, or one the agent wrote itself (a policy
deferral, a size or SMTPUTF8 refusal, a REQUIRETLS bounce). It judges nothing about TLS
itself: ``tls_receipt`` only writes down what the connection established.

Holds:

- ``outcome_for``: 2xx delivered, 4xx deferred, 5xx bounced — the only mapping;
- ``HostFailure``: why one MX address could not be used (unreachable, rejected at greeting
  or EHLO, or the TLS policy not met — the last skips the whole MX host), with the reply
  to record and the TLS receipt of the attempt when there was one;
- ``summarise``: the one failure recorded for recipients when no MX could be used (a
  policy failure wins; a refusal at greeting or EHLO is turned into a 4.4.0 deferral,
  since it says nothing about the recipients; otherwise 4.4.1 naming every host tried);
- ``refusal_before_sending``: our own reply when a message cannot go over a connection
  (SIZE, SMTPUTF8, REQUIRETLS, T29);
- ``results_for`` and ``in_batch_order``: exactly one ``RecipientResult`` per recipient,
  in the batch's order; a recipient without one is deferred 4.3.0;
- ``tls_receipt``: the receipt's TLS part (T8).

Limits: none of its own; it never drops or duplicates a recipient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kakitome.delivery.pool import Connection
from kakitome.delivery.types import (
    Batch,
    MXUsed,
    OutboundMessage,
    Outcome,
    Recipient,
    RecipientResult,
)
from kakitome.smtp.replies import Reply
from kakitome.smtp.stream import TLSInfo
from kakitome.tls.policy import PolicySource
from kakitome.tls.receipt import PeerVerification, TLSReceipt
from kakitome.tls.resolution import HostPolicy


def outcome_for(reply: Reply) -> Outcome:
    """2xx delivered, 4xx deferred, 5xx bounced."""
    if reply.positive:
        return Outcome.DELIVERED
    if reply.permanent:
        return Outcome.BOUNCED
    return Outcome.DEFERRED


class HostFailure(Exception):
    """Why one MX address could not be used for this batch."""

    UNREACHABLE = "unreachable"  # connect refused, timed out, dropped before EHLO
    REJECTED = "rejected"  # greeting or EHLO not 2xx
    POLICY = "policy"  # TLS policy not met: skip the whole MX host

    def __init__(
        self, kind: str, reply: Reply, mx: MXUsed, receipt: TLSReceipt | None = None
    ) -> None:
        super().__init__(str(reply))
        self.kind = kind
        self.reply = reply
        self.mx = mx
        self.receipt = receipt


def summarise(
    failures: Sequence[HostFailure], policy_failed: Mapping[str, HostFailure], domain: str
) -> HostFailure:
    """The failure to record when no MX address of ``domain`` could be used."""
    policy = [f for f in failures if f.kind == HostFailure.POLICY]
    if policy:
        return policy[-1]
    if policy_failed:
        return list(policy_failed.values())[-1]
    rejected = [f for f in failures if f.kind == HostFailure.REJECTED]
    if rejected:
        last = rejected[-1]
        reply = last.reply
        if not reply.transient:
            # A refusal at greeting or EHLO says nothing about the recipients: defer,
            # and let the queue's lifetime decide when to give up.
            reply = Reply(451, "4.4.0", f"{last.mx.host} refused the session: {reply}")
        return HostFailure(last.kind, reply, last.mx, last.receipt)
    details = "; ".join(f"{f.mx.host} [{f.mx.ip}]: {f.reply.text}" for f in failures)
    mx = failures[-1].mx if failures else None
    reply = Reply(
        451,
        "4.4.1",
        f"no mail exchanger of {domain} reachable" + (f" ({details})" if details else ""),
    )
    return HostFailure(HostFailure.UNREACHABLE, reply, mx or MXUsed(domain, ""))


def refusal_before_sending(domain: str, message: OutboundMessage, conn: Connection) -> Reply | None:
    """A reply of our own when this message cannot go over this connection."""
    session = conn.session
    limit = session.max_size
    if limit is not None and len(message.content) > limit:
        return Reply(
            552,
            "5.3.4",
            f"message size {len(message.content)} exceeds {conn.mx.host}'s limit of {limit}",
        )
    if message.smtputf8 and not session.supports("SMTPUTF8"):
        return Reply(553, "5.6.7", f"{conn.mx.host} does not support SMTPUTF8")
    if message.requiretls:
        return requiretls_refusal(domain, conn)
    return None


def requiretls_refusal(domain: str, conn: Connection) -> Reply | None:
    """T29: a secure path (DANE or MTA-STS enforce), a verified certificate, and a
    server that advertised REQUIRETLS (inside TLS: it is never believed before)."""
    host = conn.mx.host
    if not conn.secure:
        why = f"{domain} has no DNSSEC-validated (DANE) or MTA-STS enforce policy for {host}"
    elif not conn.receipt.verified:
        why = f"the certificate of {host} is not verified"
    elif not (conn.receipt.used and conn.session.supports("REQUIRETLS")):
        why = f"{host} does not advertise REQUIRETLS"
    else:
        return None
    return Reply(550, "5.7.30", f"REQUIRETLS support required: {why}")


def results_for(
    recipients: Sequence[Recipient],
    reply: Reply,
    mx: MXUsed | None,
    receipt: TLSReceipt | None,
) -> list[RecipientResult]:
    """One result per recipient, all with the same reply."""
    outcome = outcome_for(reply)
    return [RecipientResult(r.delivery_id, outcome, reply, mx, receipt) for r in recipients]


def internal_error(batch: Batch) -> list[RecipientResult]:
    """Every recipient deferred 4.3.0: the agent itself failed on the batch."""
    reply = Reply(451, "4.3.0", "internal error in the delivery agent")
    return [
        RecipientResult(r.delivery_id, Outcome.DEFERRED, reply)
        for m in batch.messages
        for r in m.recipients
    ]


def in_batch_order(batch: Batch, results: Sequence[RecipientResult]) -> list[RecipientResult]:
    """The results in the batch's order, one per recipient (4.3.0 for any missing)."""
    by_id = {r.delivery_id: r for r in results}
    ordered: list[RecipientResult] = []
    for message in batch.messages:
        for rcpt in message.recipients:
            result = by_id.get(rcpt.delivery_id)
            if result is None:
                result = RecipientResult(
                    rcpt.delivery_id,
                    Outcome.DEFERRED,
                    Reply(451, "4.3.0", "no result recorded for this recipient"),
                )
            ordered.append(result)
    return ordered


def tls_receipt(
    hp: HostPolicy,
    *,
    info: TLSInfo | None = None,
    verification: PeerVerification = PeerVerification.NONE,
    sha256: str | None = None,
    downgraded: bool = False,
    verify_error: str | None = None,
    tlsrpt: str | None = None,
    stripping: str | None = None,
    history: bool = False,
) -> TLSReceipt:
    """The TLS part of a receipt (T8): what the session had, under which policy."""
    return TLSReceipt(
        used=info is not None,
        version=info.version if info else None,
        cipher=info.cipher if info else None,
        verification=verification,
        level=hp.level,
        # History is named as the source only when it changed what happened.
        policy_source=PolicySource.HISTORY if history else hp.source,
        peer_certificate_sha256=sha256,
        downgraded=downgraded,
        verify_error=verify_error,
        tlsrpt_result=tlsrpt,
        stripping_suspected=stripping,
    )


__all__ = [
    "HostFailure",
    "in_batch_order",
    "internal_error",
    "outcome_for",
    "refusal_before_sending",
    "requiretls_refusal",
    "results_for",
    "summarise",
    "tls_receipt",
]
