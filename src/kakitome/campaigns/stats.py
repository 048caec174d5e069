"""Campaign statistics, and the opened/clicked activity that segments can ask about.

``sent`` counts messages queued; ``delivered``, ``deferred``, ``bounced`` (and ``queued``,
``held``) are the current states of their deliveries; ``opened``/``clicked`` count distinct
subscribers (``*_total`` every event; opens are a lower bound at best and inflated by
privacy proxies that fetch every image, so clicks are the figure to trust);
``unsubscribed`` counts recipients who left the list after the campaign reached them
(None when the lists tables cannot say). ``verified_tls_share`` is the share of delivered
messages whose TLS receipt says the MX certificate was verified (chain and name), the
promise Kakitome makes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Select, select

from kakitome.campaigns.store import CampaignRow
from kakitome.store.schema_campaigns import tracking_events

__all__ = ["CampaignStats", "activity_sources", "build_stats"]


@dataclass(frozen=True, slots=True)
class CampaignStats:
    campaign_id: int
    name: str
    status: str
    sent: int
    failed: int
    queued: int
    delivered: int
    deferred: int
    bounced: int
    held: int
    opened: int
    opened_total: int
    clicked: int
    clicked_total: int
    unsubscribed: int | None
    verified_tls: int
    verified_tls_share: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_stats(row: CampaignRow, counts: dict[str, Any]) -> CampaignStats:
    by_status: dict[str, int] = counts["by_status"]
    activity: dict[str, tuple[int, int]] = counts["activity"]
    delivered = by_status.get("delivered", 0)
    verified = int(counts["verified_tls"])
    return CampaignStats(
        campaign_id=row.id,
        name=row.name,
        status=row.status,
        sent=row.sent,
        failed=row.failed,
        queued=by_status.get("queued", 0),
        delivered=delivered,
        deferred=by_status.get("deferred", 0),
        bounced=by_status.get("bounced", 0),
        held=by_status.get("held", 0),
        opened=activity.get("open", (0, 0))[1],
        opened_total=activity.get("open", (0, 0))[0],
        clicked=activity.get("click", (0, 0))[1],
        clicked_total=activity.get("click", (0, 0))[0],
        unsubscribed=counts["unsubscribed"],
        verified_tls=verified,
        verified_tls_share=round(verified / delivered, 4) if delivered else None,
    )


def _source(kind: str) -> Any:
    def compile_activity(query: Any) -> Select[Any]:
        return select(tracking_events.c.subscriber_id).where(
            tracking_events.c.kind == kind, tracking_events.c.at >= query.since
        )

    return compile_activity


def activity_sources() -> dict[str, Any]:
    """``opened`` and ``clicked`` for ``ListService(activity_sources=...)`` (segments such
    as ``not activity.opened(90d)``). Not narrowed by list: an open is an open."""
    return {"opened": _source("open"), "clicked": _source("click")}
