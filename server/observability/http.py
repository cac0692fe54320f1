"""The operator's HTTP endpoint, beside the gRPC port: /metrics, /healthz, and the quota page.

    /             an index of these paths
    /metrics      Prometheus text format
    /healthz      readiness: 200 when the gRPC server is serving and the database answers, else 503
    /quota        read-only page: each TPL's fill as a bar, refreshed live from /quota.json
    /quota.json   the same figures for scripts

A plain threading HTTP server: it carries a handful of scrapes and page refreshes, not traffic.
"""
from __future__ import annotations

import html
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from server.domain.quantity import format_quantity
from server.observability.metrics import QuotaFill, QuotaSource

log = logging.getLogger(__name__)

Readiness = Callable[[], dict[str, bool]]  # check name -> passed


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
class MetricsHttpServer:
    registry: CollectorRegistry
    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port; see .port after start()
    readiness: Readiness | None = None
    quota: QuotaSource | None = None
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)

    def start(self) -> MetricsHttpServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                try:
                    route = ROUTES.get(path)
                    if route is None:
                        return self._send(404, "text/plain; charset=utf-8", b"not found\n")
                    self._send(*route(owner))
                except Exception:
                    log.exception("metrics endpoint failed on %s", path)
                    self._send(500, "text/plain; charset=utf-8", b"internal error\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line each
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="ecert-metrics-http", daemon=True).start()
        log.info("metrics, health and quota page on http://%s:%d/", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _metrics(owner: MetricsHttpServer) -> tuple[int, str, bytes]:
    return 200, CONTENT_TYPE_LATEST, generate_latest(owner.registry)


def _healthz(owner: MetricsHttpServer) -> tuple[int, str, bytes]:
    checks = owner.readiness() if owner.readiness else {}
    ready = all(checks.values())
    body = json.dumps({"status": "ready" if ready else "not ready", "checks": checks}).encode()
    return (200 if ready else 503), "application/json", body


def _quota_json(owner: MetricsHttpServer) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps(quota_document(owner.quota)).encode()


def _quota_page(owner: MetricsHttpServer) -> tuple[int, str, bytes]:
    page = resources.files("server.observability").joinpath("quota_page.html").read_bytes()
    return 200, "text/html; charset=utf-8", page


PATHS = (
    ("/metrics", "Prometheus text format"),
    ("/healthz", "readiness: 200 while gRPC serves and the database answers, else 503 (JSON)"),
    ("/quota", "each TPL's fill, refreshed every second"),
    ("/quota.json", "the same figures for scripts"),
)


def _index(owner: MetricsHttpServer) -> tuple[int, str, bytes]:
    items = "".join(f'<li><a href="{path}">{path}</a>: {html.escape(what)}</li>' for path, what in PATHS)
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>eCERT service</title></head>'
            f"<body><h1>eCERT certification service</h1><ul>{items}</ul></body></html>\n")
    return 200, "text/html; charset=utf-8", page.encode()


ROUTES: dict[str, Callable[[MetricsHttpServer], tuple[int, str, bytes]]] = {
    "/": _index,
    "/metrics": _metrics,
    "/healthz": _healthz,
    "/quota": _quota_page,
    "/quota.json": _quota_json,
}

__all__ = ["MetricsHttpServer", "QuotaFill", "quota_document"]
