"""Dashboard: volume over time, delivered / deferred / bounced, and the share of mail
delivered encrypted and verified — over time and by receiving domain.

Numbers come from the hourly roll-up (``WebStore.stats``), brought up to date by a
bounded chunk of events per view, and the pending queue counts.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kakitome.accounts.store import HourlyStats
from kakitome.web.ui import charts
from kakitome.web.ui.context import UI, Viewer
from kakitome.web.ui.nav import NavItem, UIArea

RANGES = {"24h": (24, 1), "7d": (7 * 24, 24), "30d": (30 * 24, 24)}  # hours, bucket hours


def bucketed(hours: list[HourlyStats], size: int) -> list[HourlyStats]:
    """Hourly stats summed into buckets of ``size`` hours (key: the bucket's first hour)."""
    if size <= 1:
        return hours
    out: list[HourlyStats] = []
    for start in range(0, len(hours), size):
        chunk = hours[start : start + size]
        item = HourlyStats(key=chunk[0].key)
        for hour in chunk:
            item.add(hour)
        out.append(item)
    return out


def label(key: float | str, size: int) -> str:
    moment = datetime.fromtimestamp(float(key), UTC)
    return moment.strftime("%H:00") if size == 1 else moment.strftime("%m-%d")


def router(ui: UI) -> APIRouter:
    r = APIRouter()
    need_viewer = Depends(ui.require("viewer"))

    @r.get("/", include_in_schema=False)
    async def dashboard(
        request: Request,
        range: str = "24h",
        viewer: Viewer = need_viewer,
    ) -> Response:
        span, size = RANGES.get(range, RANGES["24h"])
        now = ui.clock()
        _, pending = await ui.web.refresh_rollup(now=now)
        # Whole buckets: a daily view starts at midnight UTC.
        until = now
        since = now - (span - 1) * 3600
        if size == 24:
            since = (since // 86_400) * 86_400
        stats = await ui.web.stats(since=since, until=until)
        buckets = bucketed(stats.hours, size)
        labels = [label(b.key, size) for b in buckets]
        t = viewer.t
        volume = charts.stacked_bars(
            t("dashboard.volume"),
            labels,
            [
                charts.Series(t("status.delivered"), "delivered", [b.delivered for b in buckets]),
                charts.Series(t("status.deferred"), "deferred", [b.deferred for b in buckets]),
                charts.Series(t("status.bounced"), "bounced", [b.bounced for b in buckets]),
            ],
        )
        shares = charts.share_line(
            t("dashboard.share_over_time"),
            labels,
            [
                (t("tls.encrypted"), "encrypted", [b.encrypted_share for b in buckets]),
                (t("tls.verified_enc"), "verified", [b.verified_share for b in buckets]),
            ],
        )
        by_domain = charts.share_bars(
            t("dashboard.share_by_domain"),
            [(str(d.key), d.verified_share, d.delivered) for d in stats.domains],
        )
        queue = await ui.web.pending_counts()
        return ui.render(
            request,
            viewer,
            "dashboard/index.html",
            range=range if range in RANGES else "24h",
            ranges=list(RANGES),
            total=stats.total,
            domains=stats.domains,
            volume_chart=volume,
            share_chart=shares,
            domain_chart=by_domain,
            queue=queue,
            catching_up=pending,
        )

    return r


AREA = UIArea(
    name="dashboard",
    router=router,
    nav=(NavItem("dashboard", "/ui/", "nav.dashboard", "viewer", 10),),
)
