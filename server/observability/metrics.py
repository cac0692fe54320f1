"""Prometheus metrics of the service.

Each server owns its registry (several servers may live in one test process). Names:

    ecert_grpc_server_handled_total{grpc_service, grpc_method, grpc_code}   RPCs finished
    ecert_grpc_server_handling_seconds{grpc_service, grpc_method}           latency histogram
    ecert_grpc_server_in_flight                                             RPCs being served
    ecert_transmissions_total{action, outcome}                              outcome: accepted,
        accepted_with_warnings, rejected (customs' signed rejection), refused (no receipt)
    ecert_transmissions_replayed_total                                      retries answered from the record
    ecert_claims_total{kind, decision}                                      kind: match, post_importation
    ecert_claims_replayed_total{kind}
    ecert_claim_reversals_total{kind}                                       canceled, corrected
    ecert_quota_limit / _charged / _fill_ratio{tpl_number, label, quota_year, measure_unit}
                                                                            read from the ledger at scrape time
ServiceMetrics is what the kit's observability interceptor reports to (service_kit/interceptor.py);
the relay's metrics are its own (gateway_sim/relay/metrics.py).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Latency buckets from sub-millisecond reads to multi-second database waits.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_CALL_CHILDREN = 4096  # methods x status codes; beyond that (arbitrary method names) labels() every time


@dataclass(frozen=True)
class QuotaFill:
    """One level's fill, as the metrics and the quota page show it."""

    tpl_number: str
    label: str
    quota_year: int
    measure_unit: str
    limit: Decimal
    charged: Decimal
    state: str  # OPEN, CRITICAL, ON_HOLD, FILLED, CLOSED

    @property
    def fill_ratio(self) -> float:
        return float(self.charged / self.limit) if self.limit > 0 else 1.0


QuotaSource = Callable[[], Iterable[QuotaFill]]


class QuotaCollector(Collector):
    """Gauges read from the ledger when Prometheus scrapes: never stale, nothing to keep in step."""

    LABELS = ("tpl_number", "label", "quota_year", "measure_unit")

    def __init__(self, source: QuotaSource):
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        limit = GaugeMetricFamily("ecert_quota_limit", "Annual limit of a TPL level, in its measure unit", labels=self.LABELS)
        charged = GaugeMetricFamily("ecert_quota_charged", "Quantity charged to a TPL level", labels=self.LABELS)
        ratio = GaugeMetricFamily("ecert_quota_fill_ratio", "Charged share of a TPL level (0 to 1)", labels=self.LABELS)
        for q in self.source():
            labels = [q.tpl_number, q.label, str(q.quota_year), q.measure_unit]
            limit.add_metric(labels, float(q.limit))
            charged.add_metric(labels, float(q.charged))
            ratio.add_metric(labels, q.fill_ratio)
        yield from (limit, charged, ratio)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.handled = Counter("ecert_grpc_server_handled_total", "RPCs completed, by method and status code",
                               ("grpc_service", "grpc_method", "grpc_code"), registry=r)
        self.latency = Histogram("ecert_grpc_server_handling_seconds", "Time to serve an RPC",
                                 ("grpc_service", "grpc_method"), buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("ecert_grpc_server_in_flight", "RPCs being served", registry=r)
        self.transmissions = Counter("ecert_transmissions_total", "Transmissions answered, by action and outcome",
                                     ("action", "outcome"), registry=r)
        self.transmissions_replayed = Counter("ecert_transmissions_replayed_total",
                                              "Retried transmissions answered with the original receipt", registry=r)
        self.claims = Counter("ecert_claims_total", "Claims decided, by kind and decision", ("kind", "decision"), registry=r)
        self.claims_replayed = Counter("ecert_claims_replayed_total", "Claims answered from the recorded decision",
                                       ("kind",), registry=r)
        self.reversals = Counter("ecert_claim_reversals_total", "Claims reversed, by kind", ("kind",), registry=r)
        self._quota: QuotaCollector | None = None
        # (method, code) -> its handled counter and latency histogram children, made once: labels() takes
        # a lock and converts its values on every call (and nothing here removes a child).
        self._call_children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def watch_quota(self, source: QuotaSource) -> None:
        if self._quota is None:
            self._quota = QuotaCollector(source)
            self.registry.register(self._quota)

    # -- what the RPC interceptor reports ------------------------------------------------------------

    def observe_call(self, method: str, code: str, seconds: float, response: Any, details: list[Any]) -> None:
        children = self._call_children.get((method, code))
        if children is None:
            service, _, name = method.lstrip("/").rpartition("/")
            children = self.handled.labels(service, name, code), self.latency.labels(service, name)
            if len(self._call_children) < MAX_CALL_CHILDREN:
                self._call_children[(method, code)] = children
        handled, latency = children
        handled.inc()
        latency.observe(seconds)
        observer = _OBSERVERS.get(method)
        if observer is not None:
            observer(self, response, details)


@functools.lru_cache(maxsize=1024)  # a few enums, a few values each; answered on every call
def _enum_label(wrapper: Any, number: int) -> str:
    prefix = wrapper.DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED")
    try:
        return str(wrapper.Name(number)).removeprefix(prefix).lower()
    except ValueError:
        return "unspecified"


def _on_submit(metrics: ServiceMetrics, response: Any, details: list[Any]) -> None:
    from ecert.v1 import transmission_pb2 as tpb

    receipt = response.receipt if response is not None else next((d for d in details if isinstance(d, tpb.Receipt)), None)
    if response is not None and response.replayed:
        metrics.transmissions_replayed.inc()
        return
    action = _enum_label(tpb.TransmissionAction, receipt.action) if receipt is not None else "unspecified"
    outcome = _enum_label(tpb.TransmissionOutcome, receipt.outcome) if receipt is not None else "refused"
    metrics.transmissions.labels(action, outcome).inc()


def _on_claim(kind: str) -> Callable[[ServiceMetrics, Any, list[Any]], None]:
    def observe(metrics: ServiceMetrics, response: Any, details: list[Any]) -> None:
        from ecert.v1 import match_pb2 as mpb

        if response is None:
            return  # refused before a decision: counted by the RPC counter with its status code
        if response.replayed:
            metrics.claims_replayed.labels(kind).inc()
        else:
            metrics.claims.labels(kind, _enum_label(mpb.ClaimDecision, response.result.decision)).inc()

    return observe


def _on_reverse(metrics: ServiceMetrics, response: Any, details: list[Any]) -> None:
    if response is not None:
        metrics.reversals.labels("corrected" if response.HasField("corrected") else "canceled").inc()


_OBSERVERS: dict[str, Callable[[ServiceMetrics, Any, list[Any]], None]] = {
    "/ecert.v1.TransmissionService/SubmitCertificate": _on_submit,
    "/ecert.v1.MatchService/MatchClaim": _on_claim("match"),
    "/ecert.v1.MatchService/FilePostImportationClaim": _on_claim("post_importation"),
    "/ecert.v1.MatchService/ReverseClaim": _on_reverse,
}
