"""Held inbound mail: release to a forward route, or delete.

Held mail is what the MX kept for an inbound domain whose route says ``hold`` (or that
has no route). Releasing hands a held message to a ``forward`` route (``inbound.routes``
entries with ``action = "forward"`` and a ``url``): its status becomes ``forward`` and the
running service's forwarder (``kakitome.inbound.forward``) POSTs it at its next round.
Used by ``kakitome inbound release|delete`` and ``/api/v1/inbound/{id}/release`` and
``DELETE /api/v1/inbound/{id}``, so both choose the route the same way.

Errors: ``NotFound`` when there is no held message with the id, ``InputError`` when no
forward route fits (none matches the recipients, or the one named does not exist).
"""

from __future__ import annotations

from collections.abc import Sequence

from kakitome.config import InboundRoute
from kakitome.errors import InputError, NotFound
from kakitome.inbound.policy import match_route
from kakitome.inbound.store import InboundRow, InboundStore

__all__ = ["delete_held", "forward_route_for", "release_held"]


def forward_route_for(
    routes: Sequence[InboundRoute], row: InboundRow, wanted: str | None = None
) -> InboundRoute:
    """The forward route named ``wanted`` (its ``match``), else the first forward route
    matching one of the message's recipients, in recipient order. InputError if none."""
    forwards = [r for r in routes if r.action == "forward" and r.url]
    if wanted is not None:
        for route in forwards:
            if route.match == wanted:
                return route
        raise InputError(f"no forward route with match {wanted!r} in inbound.routes")
    for recipient in row.recipients:
        found = match_route(forwards, recipient)
        if found is not None:
            return found
    raise InputError(
        "no forward route matches the recipients; name one "
        "(a route with action = forward and a url in inbound.routes)"
    )


async def release_held(
    inbound: InboundStore,
    routes: Sequence[InboundRoute],
    inbound_id: str,
    *,
    route: str | None = None,
    now: float,
) -> InboundRoute:
    """Hand the held message ``inbound_id`` to a forward route (``route``: the match of
    one, else chosen by recipient); the route it went to."""
    row = await inbound.get_inbound(inbound_id)
    if row is None or row.status != "held":
        raise NotFound(f"no held message {inbound_id!r}")
    chosen = forward_route_for(routes, row, route)
    if not await inbound.release_inbound(inbound_id, route=chosen.match, now=now):
        raise NotFound(f"no held message {inbound_id!r}")  # released or deleted meanwhile
    return chosen


async def delete_held(inbound: InboundStore, inbound_ids: Sequence[str]) -> dict[str, bool]:
    """Delete held messages for good: for each id, whether a held message was deleted."""
    return {i: await inbound.delete_inbound(i, statuses=("held",)) for i in inbound_ids}
