"""Connects the operator's HTTP endpoint to a running server: its registry, readiness and quota ledger."""
from __future__ import annotations

import logging
from typing import Any

from grpc_health.v1 import health_pb2
from sqlalchemy import text

from server.config import Settings
from server.observability.http import MetricsHttpServer
from server.observability.metrics import QuotaFill, QuotaSource

log = logging.getLogger(__name__)


def readiness(running: Any) -> dict[str, bool]:
    """Ready = gRPC health says SERVING (false once shutdown starts) and the database answers."""
    serving = running.health.Check(health_pb2.HealthCheckRequest(service=""), None).status == health_pb2.HealthCheckResponse.SERVING
    try:
        with running.database.read_engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        database = True
    except Exception:
        log.warning("readiness: the database does not answer", exc_info=True)
        database = False
    return {"grpc_serving": bool(serving), "database": database}


def quota_source(running: Any) -> QuotaSource | None:
    """The current year's levels from the quota use cases, when the server has them."""
    quota = getattr(getattr(running, "use_cases", None), "quota", None)
    if quota is None:
        return None

    def read() -> list[QuotaFill]:
        return [
            QuotaFill(s.level.tpl_number, s.level.label, s.level.quota_year, s.level.measure_unit, s.level.limit,
                      s.level.charged, getattr(s.state, "name", str(s.state)))
            for s in quota.list(0, None)
        ]

    return read


def start_http(settings: Settings, running: Any) -> MetricsHttpServer | None:
    if settings.metrics_port == "" or running.metrics is None:
        return None
    source = quota_source(running)
    if source is not None:
        running.metrics.watch_quota(source)
    return MetricsHttpServer(
        running.metrics.registry,
        # Loopback unless told otherwise: the page and the metrics show every level's fill to whoever reaches them.
        host=settings.metrics_host or "127.0.0.1",
        port=int(settings.metrics_port),
        readiness=lambda: readiness(running),
        quota=source,
    ).start()
