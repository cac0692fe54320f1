"""Prometheus metrics of the network provider's relay, served on its /metrics (service_kit/metrics_http.py).

    ecert_relay_queue_depth                   transmissions stored, not yet acknowledged by customs
    ecert_relay_forwarded_total{outcome}      forwarding attempts: accepted, rejected, error
    ecert_relay_retries_total{reason}         retries, by the reason of the failed attempt
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RelayMetrics:
    """The relay's: register on its registry, serve with service_kit's MetricsHttpServer.

        metrics = RelayMetrics()
        metrics.queue_depth.set_function(lambda: store.pending_count())   # or .set(n) as it changes
        metrics.forwarded.labels("accepted").inc()
        metrics.retries.labels("unavailable").inc()
        MetricsHttpServer(metrics.registry, port=9102).start()
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.queue_depth = Gauge("ecert_relay_queue_depth", "Transmissions stored by the relay, not yet acknowledged by customs",
                                 registry=self.registry)
        self.forwarded = Counter("ecert_relay_forwarded_total", "Forwarding attempts by result (accepted, rejected, error)",
                                 ("outcome",), registry=self.registry)
        self.retries = Counter("ecert_relay_retries_total", "Forwarding retries, by the reason of the failed attempt",
                               ("reason",), registry=self.registry)
