"""``/metrics``: Prometheus text format, made fresh from the database at each scrape.

Served without authentication, like ``/healthz``: it holds counts only, no addresses or
content. Keep the HTTP port on a private network (or behind a proxy) if counts are
sensitive. Each scrape costs one indexed count per pending status and one small roll-up
query (the last hour), not a scan of the deliveries.

When the process also runs a delivery worker, its own counters and histograms per site
(``kakitome.metrics.DeliveryMetrics``, put on ``app.state.process_metrics`` by ``serve``)
follow the database-wide gauges.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

if TYPE_CHECKING:
    from kakitome.services import Services


def metrics_router(services: Services) -> APIRouter:
    router = APIRouter()
    web = services.web_store
    api_keys = services.api_keys

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Queue sizes, active API keys and the last hour's deliveries, for Prometheus."""
        registry = CollectorRegistry()
        queue = Gauge(
            "kakitome_queue_deliveries",
            "Deliveries not yet final, by status.",
            ["status"],
            registry=registry,
        )
        for status, count in (await web.pending_counts()).items():
            queue.labels(status=status).set(count)
        keys = Gauge("kakitome_api_keys_active", "API keys not revoked.", registry=registry)
        keys.set(sum(1 for k in await api_keys.list_api_keys() if k.revoked_at is None))
        now = time.time()
        await web.refresh_rollup(now=now)
        stats = await web.stats(since=now - 3600, until=now)
        hour = Gauge(
            "kakitome_last_hour_deliveries",
            "Delivery outcomes in the current and previous hour (from the roll-up).",
            ["outcome"],
            registry=registry,
        )
        total = stats.total
        for outcome in (
            "delivered",
            "delivered_tls",
            "delivered_verified",
            "downgraded",
            "deferred",
            "bounced",
        ):
            hour.labels(outcome=outcome).set(getattr(total, outcome))
        share = Gauge(
            "kakitome_last_hour_tls_verified_share",
            "Share of the current and previous hour's deliveries with a verified certificate.",
            registry=registry,
        )
        share.set(total.delivered_verified / total.delivered if total.delivered else 0.0)
        body = generate_latest(registry)
        process = getattr(request.app.state, "process_metrics", None)
        if isinstance(process, CollectorRegistry):
            body += generate_latest(process)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
