"""MTA-STS as the checker sees it: the TXT record, the policy, and nothing cached.

Talks to: the resolver (TXT ``_mta-sts.<domain>``, A/AAAA ``mta-sts.<domain>``) and the
policy host over HTTPS on ``checker.https_port`` (443 on the internet). Parsing and the
HTTPS fetch are the delivery engine's own (``kakitome.tls.mta_sts``: strict parsing per
T19/T21, no redirects, status 200, ``text/plain``, bounded size), so the checker and
delivery cannot disagree about what a valid policy is.

Trusts: the policy host's certificate only when it verifies for ``mta-sts.<domain>``
against the delivery engine's anchors; a certificate failure is its own finding.

Limits: read-only — unlike delivery, the checker always fetches afresh and never writes
the MTA-STS cache (a check must not change how mail is delivered). The whole fetch is
bounded by ``checker.policy_timeout``; the body by ``MAX_POLICY_BYTES``.
"""

from __future__ import annotations

import asyncio

from kakitome.checker.facts import MtaStsFacts
from kakitome.config import Settings
from kakitome.dns.resolver import Resolver
from kakitome.errors import DeliveryError
from kakitome.tls import mta_sts as sts

MAX_POLICY_BYTES = 65_536


async def check_mta_sts(resolver: Resolver, domain: str, settings: Settings) -> MtaStsFacts:
    """The record and the policy of ``domain``, each failure described in words."""
    try:
        texts = await resolver.resolve_txt(f"_mta-sts.{domain}")
    except DeliveryError as exc:
        return MtaStsFacts(record_error=f"TXT lookup failed: {exc.reply.text}")
    records = tuple(t for t in texts if t.startswith("v=STSv1"))
    if not records:
        return MtaStsFacts()
    try:
        record = sts.parse_sts_records(texts)
    except sts.StsError as exc:
        return MtaStsFacts(records, record_error=exc.reason)
    facts = MtaStsFacts(records, policy_id=record.policy_id)
    host = f"mta-sts.{domain}"
    try:
        async with asyncio.timeout(settings.checker.policy_timeout):
            status, media, body = await sts.https_request(
                "GET",
                host,
                sts.WELL_KNOWN_PATH,
                port=settings.checker.https_port,
                resolver=resolver,
                ssl_context=sts.https_context(settings.tls),
                max_bytes=MAX_POLICY_BYTES,
            )
    except TimeoutError:
        return _replace(
            facts, fetch_error=f"no answer within {settings.checker.policy_timeout:g} s"
        )
    except sts.StsError as exc:
        if exc.result_type == sts.STS_WEBPKI_INVALID:
            return _replace(facts, policy_cert_error=exc.reason, fetch_error=exc.reason)
        return _replace(facts, fetch_error=exc.reason)
    if status != 200:
        redirect = " (redirects are not allowed)" if 300 <= status < 400 else ""
        return _replace(facts, fetch_error=f"HTTP status {status}{redirect}")
    if media != "text/plain":
        return _replace(facts, fetch_error=f"media type {media or 'none'!r}, not text/plain")
    text = body.decode("utf-8", errors="replace")
    try:
        policy = sts.parse_policy(text, record.policy_id)
    except sts.StsError as exc:
        return _replace(facts, policy_text=text[:2000], policy_error=exc.reason)
    return _replace(
        facts,
        policy_text=text[:2000],
        mode=policy.mode.value,
        mx_patterns=policy.mx,
        max_age=policy.max_age,
    )


def mx_allowed(patterns: tuple[str, ...], host: str) -> bool:
    """Does an MTA-STS policy's ``mx`` list allow ``host`` (RFC 8461 §4.1)?"""
    return any(sts.mx_pattern_matches(p, host) for p in patterns)


def _replace(facts: MtaStsFacts, **changes: object) -> MtaStsFacts:
    from dataclasses import replace

    return replace(facts, **changes)  # type: ignore[arg-type]
