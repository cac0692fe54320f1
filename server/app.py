"""Assembles the certification service: database, keys, use cases, servicers, health, reflection.

A grpc.aio server on its own event-loop thread; the synchronous handlers (and the synchronous
SQLAlchemy driver, which commits several times faster than the asyncio one) run in a bounded pool of
workers. A call holds a worker only while its handler runs: one waiting for its request, for its
turn or for quota events holds none (server/api/serving.py; issue 15).
"""
from __future__ import annotations

import datetime as dt
import gc
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ecert.v1 import clock_pb2, clock_pb2_grpc, match_pb2, match_pb2_grpc, quota_pb2, quota_pb2_grpc, transmission_pb2, transmission_pb2_grpc
from ecert.v1 import log_pb2, log_pb2_grpc, usage_pb2, usage_pb2_grpc
from server.adapters.database import Database
from server.adapters.keystore import LogKeyMissing, ReceiptKeyMissing, derived_key, load_log_key, load_receipt_signer, load_trust_store
from server.adapters.reload import TrustStoreWatcher
from service_kit.revocation import RevocationList
from server.api.auth import Authorizer
from server.api.clock_servicer import ClockServicer
from server.api.log_servicer import LogServicer
from server.api.interceptors import ObservabilityInterceptor
from server.api.limits import RequestGuard
from server.api.match_servicer import MatchServicer
from server.api.quota_servicer import QuotaServicer
from server.api.serving import Bridge, Limits, Registrar, Serving, on_loop
from server.api.transmission_servicer import TransmissionServicer
from server.api.usage_servicer import UsageServicer
from server.config import Settings
from server.observability import logs, wiring
from server.observability.http import MetricsHttpServer
from server.observability.metrics import ServiceMetrics
from server.service.allotments import Allotments
from server.service.claims import ClaimUseCases
from server.service.clock import Clock, SimulatedClock, clock_with_offset
from server.service.clock_control import ClockControl
from server.service.log import LogUseCases
from server.service.quota import QuotaCalendar, QuotaEventBus, QuotaUseCases
from server.service.reference import ReferenceStore
from server.service.transmissions import TransmissionUseCases
from server.service.usage import UsageUseCases

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    transmission_pb2.DESCRIPTOR.services_by_name["TransmissionService"].full_name,
    match_pb2.DESCRIPTOR.services_by_name["MatchService"].full_name,
    quota_pb2.DESCRIPTOR.services_by_name["QuotaService"].full_name,
    log_pb2.DESCRIPTOR.services_by_name["LogService"].full_name,
    usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name,
)
CLOCK_SERVICE = clock_pb2.DESCRIPTOR.services_by_name["ClockService"].full_name
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
OPENING_CHECK_SECONDS = 5.0


class ListenError(RuntimeError):
    """The server's address could not be bound."""


@dataclass
class UseCases:
    references: ReferenceStore
    transmissions: TransmissionUseCases
    claims: ClaimUseCases
    quota: QuotaUseCases
    events: QuotaEventBus
    log: LogUseCases
    usage: UsageUseCases


@dataclass
class RunningServer:
    server: Serving
    port: int
    health: health.HealthServicer
    database: Database
    use_cases: UseCases
    metrics: ServiceMetrics | None = None
    http: MetricsHttpServer | None = None  # /metrics, /healthz, /quota when a metrics port is set
    _stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def transmissions(self) -> TransmissionUseCases:
        return self.use_cases.transmissions

    def stop(self, grace: float = 5.0) -> None:
        """Graceful: health says NOT_SERVING, new calls are refused, in-flight calls finish."""
        self._stopping.set()
        self.use_cases.events.stop()
        self.health.enter_graceful_shutdown()
        if self.http is not None:
            self.http.stop()
        self.server.stop(grace)
        self.database.dispose()


def build_use_cases(settings: Settings, database: Database, clock: Clock) -> UseCases:
    references = ReferenceStore(database, clock)
    references.ensure_defaults()
    calendar = QuotaCalendar(
        ZoneInfo(settings.quota_timezone), Decimal(settings.critical_share), lambda: references.current().tpls.opening,
        batch_cutoff=settings.batch_cutoff_time(),
    )
    quota = QuotaUseCases(database, calendar, clock)
    events = QuotaEventBus(
        quota,
        max_watchers=max(1, settings.workers // 4),
        per_identity=settings.watches_per_identity,
        reserved=settings.reserved_watches,
        max_duration=dt.timedelta(seconds=settings.max_watch_seconds),
    )
    receipt_signer = load_receipt_signer(
        settings.resolved_receipt_key(), settings.receipt_key_id, create_if_missing=settings.create_missing_receipt_key
    )
    transmissions = TransmissionUseCases(
        database,
        trust_store=load_trust_store(settings.resolved_trust_store()),
        receipt_signer=receipt_signer,
        reference=lambda: references.current().tpls,
        clock=clock,
        recipient=settings.recipient,
        max_clock_skew=dt.timedelta(seconds=settings.max_clock_skew_seconds),
        max_envelope_age=dt.timedelta(seconds=settings.max_envelope_age_seconds),
        # Replicas share the receipt-signing key, so each accepts the page tokens of the others.
        page_token_key=derived_key(receipt_signer, b"page tokens"),
    )
    allotments = Allotments(
        database, clock, enabled=settings.allotments == "on" or (settings.allotments == "auto" and not database.is_sqlite),
        share=Decimal(settings.allotment_share), critical_share=calendar.critical_share,
    )
    claims = ClaimUseCases(
        database,
        references=references,
        calendar=calendar,
        clock=clock,
        events=events,
        allotments=allotments,
    )
    log_key = load_log_key(settings.resolved_log_key(), create_if_missing=settings.create_missing_receipt_key)
    transparency = LogUseCases(database, key=log_key, origin=settings.log_origin, clock=clock, witnesses=settings.witness_verifiers())
    return UseCases(references, transmissions, claims, quota, events, transparency, UsageUseCases(database))


def freeze_startup_heap() -> None:
    """For a serving process, once started: what starting made (modules, mapped tables, compiled
    statements, message descriptors; about 100,000 objects) lives as long as the process, and every
    full collection walked all of it, a pause of about 60 ms that every call in flight waited out.
    Frozen, they are left out of collections (which then took about 2 ms)."""
    gc.collect()
    gc.freeze()


def _allocate_openings(running: RunningServer) -> None:
    """Allocates each opening batch soon after its window closes, even if no claim arrives to do it,
    gives back the prorated offers whose deadline passed unanswered, runs each daily cutoff's batch
    of claims pending near fill, and folds idle allotments back into their levels."""
    while not running._stopping.wait(OPENING_CHECK_SECONDS):
        try:
            running.use_cases.claims.allocate_due_openings()
        except Exception:
            log.exception("opening allocation failed; retrying at the next check")
        try:
            running.use_cases.claims.lapse_due_offers()
        except Exception:
            log.exception("lapsing prorated offers failed; retrying at the next check")
        try:
            running.use_cases.claims.run_due_batch()
        except Exception:
            log.exception("the cutoff batch failed; retrying at the next check")
        try:
            running.use_cases.claims.allotments.return_idle()
        except Exception:
            log.exception("returning idle allotments failed; retrying at the next check")


def _service_clock(settings: Settings) -> Clock:
    """The system clock, moved by an offset, or simulated (test harnesses; logged, and every log line says so)."""
    if settings.simulated_clock:
        clock = SimulatedClock(settings.simulated_start())
        logs.mark_simulated_clock()
        log.warning("the service runs on a SIMULATED clock starting at %s (ECERT_SIMULATED_CLOCK); "
                    "ecert.v1.ClockService sets and advances it", clock.now().isoformat())
        return clock
    if settings.clock_offset_seconds:
        log.warning("the service clock is offset %+.3f s from the system clock (ECERT_CLOCK_OFFSET_SECONDS)", settings.clock_offset_seconds)
    return clock_with_offset(settings.clock_offset_seconds)


def serving_limits(settings: Settings) -> Limits:
    return Limits(
        workers=settings.workers,
        reserved_workers=settings.reserved_workers,
        calls_per_identity=settings.calls_per_identity,
        max_calls=settings.max_concurrent_rpcs,
        reserved_calls=settings.reserved_calls,
        request_arrival_seconds=settings.request_arrival_ms / 1000,
    )


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The HTTP/2 transport's limits: streams per connection, keepalive pings (kept up on a connection
    whose only stream is a quiet watch), and how long a connection may stay idle or live at all
    (0: no limit); a connection past its age gets GOAWAY and its calls the grace to finish."""
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # gRPC turns SO_REUSEPORT on by default: a second server on a port in use would start and
        # take a share of the connections. Off, binding a port in use fails.
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_ms),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    if settings.max_connection_idle_ms:
        options.append(("grpc.max_connection_idle_ms", settings.max_connection_idle_ms))
    if settings.max_connection_age_ms:
        options.append(("grpc.max_connection_age_ms", settings.max_connection_age_ms))
        options.append(("grpc.max_connection_age_grace_ms", settings.max_connection_age_grace_ms))
    return options


async def _aio_server(options: list[tuple[str, int]]) -> grpc.aio.Server:
    # Created on the serving loop, which it belongs to. Calls beyond the admission's limits are
    # refused by the bridge (with reasons), so grpc's own maximum_concurrent_rpcs is not used.
    return grpc.aio.server(options=options)


async def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    return server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)


def create_server(
    settings: Settings,
    *,
    address: str | None = None,
    clock: Clock | None = None,
    credentials: grpc.ServerCredentials | None = None,
    extra_services: Sequence[Callable[[grpc.Server], None]] = (),
) -> RunningServer:
    """Build and start the server; bind port 0 to get a free one (see RunningServer.port).

    `extra_services` register more servicers on the same server (the benchmarks' echo baseline),
    behind the same interceptors, limits, worker pool and credentials.

    Raises ReceiptKeyMissing or LogKeyMissing (before touching the database) when the receipt- or
    log-signing key is missing and settings do not ask to create keys, and ListenError when the address cannot be bound (a port
    already in use: SO_REUSEPORT is off, so a second server cannot share it unnoticed)."""
    if not settings.create_missing_receipt_key and not settings.resolved_receipt_key().exists():
        raise ReceiptKeyMissing(settings.resolved_receipt_key())
    if not settings.create_missing_receipt_key and not settings.resolved_log_key().exists():
        raise LogKeyMissing(settings.resolved_log_key())
    # Revoked client certificates (RevocationListInvalid when a named CRL cannot be used): before the database too.
    revocations = RevocationList.for_tls_dir(settings.resolved_tls_dir(), settings.revocation_list) if credentials else None
    database = Database(
        settings.resolved_database_url(),
        pool_size=settings.db_pool_size,
        max_transactions=settings.max_transactions,
        admission_wait=settings.transaction_wait_ms / 1000,
    )
    database.upgrade()
    if clock is None:
        clock = _service_clock(settings)
    use_cases = build_use_cases(settings, database, clock)

    metrics = ServiceMetrics()
    observability = ObservabilityInterceptor(metrics)
    bridge = Bridge(serving_limits(settings), authenticated=credentials is not None, observability=observability)
    aio_server = on_loop(_aio_server(server_options(settings)))
    # Each servicer's handlers are wrapped once per method as they are registered: roles are enforced
    # whenever callers are authenticated (mutual TLS; plaintext is development only); observability
    # first (outermost), so refusals are logged and counted too.
    server = Registrar(aio_server, bridge, [observability, RequestGuard(), *([Authorizer(revocations=revocations)] if credentials else [])])
    transmission_pb2_grpc.add_TransmissionServiceServicer_to_server(TransmissionServicer(use_cases.transmissions), server)
    match_pb2_grpc.add_MatchServiceServicer_to_server(MatchServicer(use_cases.claims, use_cases.log), server)
    quota_pb2_grpc.add_QuotaServiceServicer_to_server(QuotaServicer(use_cases.quota, use_cases.events), server)
    log_pb2_grpc.add_LogServiceServicer_to_server(LogServicer(use_cases.log), server)
    usage_pb2_grpc.add_UsageServiceServicer_to_server(UsageServicer(use_cases.usage, use_cases.events), server)
    simulated = isinstance(clock, SimulatedClock)
    if simulated:  # the harness's control of time exists only on a simulated clock
        clock_pb2_grpc.add_ClockServiceServicer_to_server(ClockServicer(ClockControl(clock)), server)
    service_names = (*SERVICE_NAMES, *((CLOCK_SERVICE,) if simulated else ()))
    for register in extra_services:
        register(server)

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )

    bind = address or f"{settings.host}:{settings.port}"
    try:
        port = on_loop(_bind(aio_server, bind, credentials))
    except RuntimeError:  # grpcio raises when nothing could be bound
        port = 0
    if port == 0:
        use_cases.events.stop()
        bridge.shutdown()
        database.dispose()
        raise ListenError(f"cannot listen on {bind}: the address is in use or not available here")
    on_loop(aio_server.start())
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(Serving(aio_server, bridge), port, health_servicer, database, use_cases, metrics)
    running.http = wiring.start_http(settings, running)
    # A period that opened while no server ran is allocated now, before the first call; the timer
    # catches the next opening.
    use_cases.claims.allocate_due_openings()
    use_cases.claims.run_due_batch()  # likewise a cutoff that passed while no server ran
    threading.Thread(target=_allocate_openings, args=(running,), name="quota-openings", daemon=True).start()
    # Entries recorded while no server ran (and the first, empty checkpoint) are integrated now; then the
    # transparency log's sequencer runs off the request path: one at a time across replicas (server/service/log.py).
    use_cases.log.integrate()
    threading.Thread(target=use_cases.log.run, args=(running._stopping, settings.log_interval_ms / 1000),
                     name="log-sequencer", daemon=True).start()
    # The partners' trust store follows its file: a key added or removed is in force within a second.
    watcher = TrustStoreWatcher(settings.resolved_trust_store(), lambda store: setattr(use_cases.transmissions, "trust_store", store))
    threading.Thread(target=watcher.run, args=(running._stopping,), name="trust-store-watch", daemon=True).start()
    if revocations is not None:  # and the revocation list its file: a certificate revoked is refused within a second
        revocations.watch(running._stopping)
    log.info("serving on port %d (database %s)", port, database.dialect)
    return running
