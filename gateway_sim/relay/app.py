"""Assembles a relay: its store, its forwarder to customs, and its own gRPC server."""
from __future__ import annotations

import logging
import pathlib
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from client.tls import secure_channel, server_credentials
from ecert.relay.v1 import relay_pb2, relay_pb2_grpc
from gateway_sim.relay.faults import Faults
from gateway_sim.relay.forwarder import Forwarder, RetryPolicy
from gateway_sim.relay.metrics import RelayMetrics
from gateway_sim.relay.servicer import POLICY, RelayServicer
from gateway_sim.relay.store import RelayStore
from service_kit import tracing
from service_kit.authorization import Authorizer
from service_kit.interceptor import ObservabilityInterceptor
from service_kit.metrics_http import MetricsHttpServer
from service_kit.revocation import RevocationList

log = logging.getLogger(__name__)
SERVICE_NAME = relay_pb2.DESCRIPTOR.services_by_name["RelayService"].full_name


@dataclass
class RelaySettings:
    store: pathlib.Path
    service: str  # customs' address, host:port
    tls_dir: pathlib.Path | None  # None: plaintext both ways (development only)
    listen: str = "127.0.0.1:0"
    faults: Faults = field(default_factory=Faults)
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    workers: int = 16
    metrics_port: int | None = None  # /metrics (Prometheus) on this port; None: off
    # The CRL of its clients' certificates (service_kit/revocation.py); None: crl.pem in tls_dir once it exists.
    revocation_list: pathlib.Path | None = None


@dataclass
class RunningRelay:
    server: grpc.Server
    port: int
    store: RelayStore
    forwarder: Forwarder
    health: health.HealthServicer
    channel: grpc.Channel
    stopping: threading.Event
    http: Any = None  # the /metrics endpoint when one was asked for

    def stop(self, grace: float = 2.0) -> None:
        self.stopping.set()
        if self.http is not None:
            self.http.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.forwarder.stop()
        self.channel.close()
        self.store.close()


def create_relay(settings: RelaySettings) -> RunningRelay:
    # Partners authenticate by certificate, as at the service: the same revocation list refuses them.
    revocations = RevocationList.for_tls_dir(settings.tls_dir, settings.revocation_list) if settings.tls_dir is not None else None
    store = RelayStore(settings.store)
    if settings.tls_dir is not None:
        raw = secure_channel(settings.service, settings.tls_dir)  # the relay's certificate, role relay
    else:
        raw = grpc.insecure_channel(settings.service)
    channel = tracing.traced_channel(raw)  # forwarded calls carry the trace of the call that handed the envelope over
    metrics = None
    if settings.metrics_port is not None:
        metrics = RelayMetrics()
        metrics.queue_depth.set_function(store.pending_count)
    forwarder = Forwarder(store, channel, policy=settings.policy, faults=settings.faults, metrics=metrics)
    stopping = threading.Event()

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="relay-rpc"),
        interceptors=[ObservabilityInterceptor(), *([Authorizer(POLICY, revocations=revocations)] if settings.tls_dir is not None else [])],
    )
    relay_pb2_grpc.add_RelayServiceServicer_to_server(RelayServicer(store, forwarder.wake, stopping.is_set), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    if settings.tls_dir is not None:
        port = server.add_secure_port(settings.listen, server_credentials(settings.tls_dir))
    else:
        port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise RuntimeError(f"cannot listen on {settings.listen}")
    server.start()
    forwarder.start()
    if revocations is not None:
        revocations.watch(stopping)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("relay on port %d forwarding to %s (faults: %s)", port, settings.service, settings.faults if settings.faults.any else "none")
    http = None
    if metrics is not None:
        http = MetricsHttpServer(metrics.registry, port=settings.metrics_port or 0, title="eCERT relay").start()
    return RunningRelay(server, port, store, forwarder, health_servicer, channel, stopping, http)
