"""The effective TLS policy of a destination, explained as one JSON-ready document.

Used by ``kakitome policy explain`` and ``GET /api/v1/policy/{domain}``: both show what
delivery would do now, because this resolves the MX hosts with the given resolver and
runs the same ``PolicyResolver`` the delivery agent uses, on the same ``TLSState`` (the
MTA-STS cache and host history). Discovering an MTA-STS policy stores it in that state,
as delivery would.

Talks to: DNS (MX, TLSA) and MTA-STS policy hosts, through the resolver and
``PolicyResolver``. Knows nothing of storage: the caller passes the state (in the
service, ``kakitome.tls.store.TLSStore``).
"""

from __future__ import annotations

from typing import Any

from kakitome.config import Settings
from kakitome.dns.resolver import Resolver, to_alabel
from kakitome.errors import DeliveryError
from kakitome.tls.resolution import PolicyResolver
from kakitome.tls.state import TLSState

__all__ = ["explain_policy"]


async def explain_policy(
    settings: Settings, resolver: Resolver, state: TLSState, domain: str
) -> dict[str, Any]:
    """``{"domain", "hosts": [...], ...}``: per MX host (with its preference and
    addresses) the level, its source and the parts of the decision; ``error`` when the
    MX lookup failed, ``null_mx`` when the domain accepts no mail. DeliveryError when
    ``domain`` is not a domain name."""
    name = to_alabel(domain)
    try:
        mx = await resolver.resolve_mx(name)
    except DeliveryError as exc:
        return {"domain": name, "error": str(exc.reply), "hosts": []}
    if mx.null_mx:
        return {"domain": name, "null_mx": True, "hosts": []}
    policy = await PolicyResolver(settings, resolver, state).resolve(name, mx)
    document = policy.to_dict()
    for host, entry in zip(mx.hosts, document["hosts"], strict=True):
        entry["preference"] = host.preference
        entry["addresses"] = list(host.addresses)
    return document
