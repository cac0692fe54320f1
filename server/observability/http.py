"""The service's operator endpoint, beside the gRPC port: the kit's /metrics and /healthz
(service_kit/metrics_http.py), and the quota page.

    /             an index of these paths
    /metrics      Prometheus text format
    /healthz      readiness: 200 when the gRPC server is serving and the database answers, else 503
    /quota        read-only page: each TPL's fill as a bar, refreshed live from /quota.json
    /quota.json   the same figures for scripts
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from server.domain.quantity import format_quantity
from server.observability.metrics import QuotaFill, QuotaSource
from service_kit import metrics_http
from service_kit.metrics_http import Answer


def quota_document(source: QuotaSource | None) -> dict[str, Any]:
    levels = list(source()) if source is not None else []
    return {
        "available": source is not None,
        "levels": [
            {
                "tpl_number": q.tpl_number, "label": q.label, "quota_year": q.quota_year, "measure_unit": q.measure_unit,
                "limit": format_quantity(q.limit), "charged": format_quantity(q.charged),
                "remaining": format_quantity(q.limit - q.charged),
                "fill_ratio": round(q.fill_ratio, 6), "state": q.state,
            }
            for q in levels
        ],
    }


@dataclass
class MetricsHttpServer(metrics_http.MetricsHttpServer):
    quota: QuotaSource | None = None
    title: str = "eCERT certification service"

    def pages(self) -> dict[str, tuple[str, Callable[[], Answer]]]:
        return {
            "/metrics": ("Prometheus text format", self.metrics_page),
            "/healthz": ("readiness: 200 while gRPC serves and the database answers, else 503 (JSON)", self.healthz_page),
            "/quota": ("each TPL's fill, refreshed every second", self.quota_page),
            "/quota.json": ("the same figures for scripts", self.quota_json),
        }

    def quota_json(self) -> Answer:
        return 200, "application/json", json.dumps(quota_document(self.quota)).encode()

    def quota_page(self) -> Answer:
        page = resources.files("server.observability").joinpath("quota_page.html").read_bytes()
        return 200, "text/html; charset=utf-8", page


__all__ = ["MetricsHttpServer", "QuotaFill", "quota_document"]
