"""An operator's HTTP endpoint beside a gRPC port: /metrics (Prometheus), /healthz, and an index.

    /             an index of the paths served
    /metrics      Prometheus text format, from the process's registry
    /healthz      readiness: 200 when every check passes, else 503 (JSON: the checks by name)

A process adds its own pages by overriding `pages` (the service: its quota page,
server/observability/http.py). A plain threading HTTP server: it carries a handful of scrapes and page
refreshes, not traffic.
"""
from __future__ import annotations

import html
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Readiness = Callable[[], dict[str, bool]]  # check name -> passed
Answer = tuple[int, str, bytes]  # status, content type, body


@dataclass
class MetricsHttpServer:
    registry: CollectorRegistry
    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port; see .port after start()
    readiness: Readiness | None = None
    title: str = "eCERT"  # the index page's heading
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)

    def pages(self) -> dict[str, tuple[str, Callable[[], Answer]]]:
        """Path -> (what the index says of it, what answers it)."""
        return {
            "/metrics": ("Prometheus text format", self.metrics_page),
            "/healthz": ("readiness: 200 when every check passes, else 503 (JSON)", self.healthz_page),
        }

    def metrics_page(self) -> Answer:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)

    def healthz_page(self) -> Answer:
        checks = self.readiness() if self.readiness else {}
        ready = all(checks.values())
        body = json.dumps({"status": "ready" if ready else "not ready", "checks": checks}).encode()
        return (200 if ready else 503), "application/json", body

    def index_page(self, pages: dict[str, tuple[str, Callable[[], Answer]]]) -> Answer:
        items = "".join(f'<li><a href="{path}">{path}</a>: {html.escape(what)}</li>' for path, (what, _) in pages.items())
        title = html.escape(self.title)
        page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
                f"<body><h1>{title}</h1><ul>{items}</ul></body></html>\n")
        return 200, "text/html; charset=utf-8", page.encode()

    def start(self) -> MetricsHttpServer:
        pages = self.pages()
        routes: dict[str, Callable[[], Answer]] = {path: answer for path, (_, answer) in pages.items()}
        routes["/"] = lambda: self.index_page(pages)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                try:
                    route = routes.get(path)
                    if route is None:
                        return self._send(404, "text/plain; charset=utf-8", b"not found\n")
                    self._send(*route())
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
        log.info("%s on http://%s:%d/", ", ".join(p.lstrip("/") for p in pages), self.host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
