"""Process metrics for Prometheus: what this process's delivery worker did, per site.

One ``DeliveryMetrics`` per process, made by ``kakitome serve`` and passed to the worker;
its registry is served by the web role's ``/metrics`` (next to the database-wide queue
gauges of ``kakitome.web.ui.metrics``) and, for a process without the web role, on
``scale.metrics_port`` (``serve_metrics``). Counters are per process: Prometheus sums them
over the workers it scrapes.

Series (labels are bounded: ``site`` is a destination site, not a domain or address):

- ``kakitome_deliveries_total{site, outcome}``: results recorded (delivered, deferred,
  bounced);
- ``kakitome_delivered_tls_total{site, tls}``: delivered results by how they travelled
  (verified, encrypted, plaintext); the TLS verified share is
  ``verified / sum(delivered_tls_total)``, also given as ``kakitome_tls_verified_share``;
- ``kakitome_attempt_seconds{site}``: histogram of one batch attempt (up to 16 messages);
- ``kakitome_site_window{site}``, ``kakitome_site_connections{site}``: the shaping window
  and the slots this process holds;
- ``kakitome_site_backoffs_total{site}``: back-offs on 421 / 4.7.x seen by this process.

Talks to: whoever scrapes the port (no authentication: counts only, no addresses; bind it
to a private address).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kakitome.delivery.shaping import SiteStatus
from kakitome.delivery.types import Outcome, RecipientResult

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)
UNKNOWN_SITE = "-"


class _ShapingCollector(Collector):
    def __init__(self, status: Callable[[], Iterable[SiteStatus]]) -> None:
        self._status = status

    def collect(self) -> Iterable[Any]:
        window = GaugeMetricFamily(
            "kakitome_site_window",
            "Connections the site's slow-start window allows.",
            labels=["site"],
        )
        held = GaugeMetricFamily(
            "kakitome_site_connections",
            "Connection slots of the site held by this process (open connections, idle included).",
            labels=["site"],
        )
        backoffs = GaugeMetricFamily(
            "kakitome_site_backoffs",
            "Back-offs (421 / 4.7.x) this process applied to the site since it started.",
            labels=["site"],
        )
        for site in self._status():
            window.add_metric([site.site], site.window)
            held.add_metric([site.site], site.held)
            backoffs.add_metric([site.site], site.backoffs)
        yield window
        yield held
        yield backoffs


class DeliveryMetrics:
    """Counters and histograms of one process's deliveries, in their own registry."""

    def __init__(self, site_of_host: Callable[[str], str] | None = None) -> None:
        self.registry = CollectorRegistry()
        self._site_of_host = site_of_host or (lambda host: host)
        self.deliveries = Counter(
            "kakitome_deliveries",
            "Delivery results recorded by this process, by destination site and outcome.",
            ["site", "outcome"],
            registry=self.registry,
        )
        self.delivered_tls = Counter(
            "kakitome_delivered_tls",
            "Delivered results by transport: verified, encrypted (not verified), plaintext.",
            ["site", "tls"],
            registry=self.registry,
        )
        self.attempt_seconds = Histogram(
            "kakitome_attempt_seconds",
            "Duration of one batch attempt (one destination, up to 16 messages).",
            ["site"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._verified = 0
        self._delivered = 0
        self._lock = threading.Lock()
        share = Gauge(
            "kakitome_tls_verified_share",
            "Share of this process's delivered results whose certificate was verified.",
            registry=self.registry,
        )
        share.set_function(self._share)

    def watch_shaping(self, status: Callable[[], Iterable[SiteStatus]]) -> None:
        """Export the shaping windows and slots of ``status`` (Shaper.status)."""
        self.registry.register(_ShapingCollector(status))

    def _share(self) -> float:
        with self._lock:
            return self._verified / self._delivered if self._delivered else 0.0

    def site(self, results: Sequence[RecipientResult]) -> str:
        for result in results:
            if result.mx is not None:
                return self._site_of_host(result.mx.host)
        return UNKNOWN_SITE

    def observe_attempt(self, site: str, seconds: float) -> None:
        self.attempt_seconds.labels(site=site).observe(seconds)

    def observe_results(self, site: str, results: Sequence[RecipientResult]) -> None:
        counts: dict[tuple[str, str], int] = {}
        tls_counts: dict[str, int] = {}
        for result in results:
            key = (site, result.outcome.value)
            counts[key] = counts.get(key, 0) + 1
            if result.outcome is Outcome.DELIVERED:
                receipt = result.tls
                if receipt is None or not receipt.used:
                    kind = "plaintext"
                elif receipt.verified:
                    kind = "verified"
                else:
                    kind = "encrypted"
                tls_counts[kind] = tls_counts.get(kind, 0) + 1
        for (site_, outcome), n in counts.items():
            self.deliveries.labels(site=site_, outcome=outcome).inc(n)
        for kind, n in tls_counts.items():
            self.delivered_tls.labels(site=site, tls=kind).inc(n)
        with self._lock:
            self._delivered += sum(tls_counts.values())
            self._verified += tls_counts.get("verified", 0)


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> Callable[[], None]:
    """Serve ``registry`` on http://host:port/metrics in a thread; returns a stop function."""
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


__all__ = ["UNKNOWN_SITE", "DeliveryMetrics", "serve_metrics"]
