"""`ecert serve`: run the certification service until SIGTERM/SIGINT, then shut down gracefully.

Every setting (server/config.py) has its flag here, named after it; a flag wins over its ECERT_*
variable, which wins over the configuration file (`--config`), which wins over the default.
The log says when the service started (with what it serves and where its data are) and when it
stopped; every failure to start is one line on stderr and exit status 2 (configuration, TLS
material, a port already taken) or 3 (the database cannot be reached).
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import pathlib
import signal
import threading
import time
from typing import Any, Optional

import typer

from client.commands import common
from client.commands.database import database_errors, shown

log = logging.getLogger("ecert.serve")


# What each setting is, and its default in words, for `ecert serve --help`. Every field of Settings gets a
# flag (made from the field: `--` and its name with dashes, typed as the field); one missing here is
# still a flag, with only its variable for help (tests/operators/test_serve_settings.py asks for both).
HELP: dict[str, tuple[str, str]] = {
    "host": ("listen address", "127.0.0.1"),
    "port": ("listen port; 0 picks a free one", "50051"),
    "data_dir": ("keys and the SQLite file", "./ecert-data"),
    "database_url": ("SQLAlchemy URL", "sqlite:///<data dir>/ecert.db"),
    "tls_dir": ("ca.pem, cert.pem, key.pem, read again when they change", "<data dir>/tls"),
    "revocation_list": ("CRL of revoked TLS client certificates, signed by the CA in ca.pem, read again when it changes; "
                        "a named file must exist at start", "<tls dir>/crl.pem once it exists"),
    "trust_store": ("partners' document-signing keys, read again when the file changes", "<data dir>/trust/partner-keys.json"),
    "receipt_key": ("customs' receipt-signing key, made if missing", "<data dir>/keys/receipt-signing.pem"),
    "receipt_key_id": ("the key id receipts name", "us-cbp-receipts-1"),
    "recipient": ("the recipient receipts name", "US-CBP"),
    "log_key": ("the transparency log's checkpoint-signing key, made if missing", "<receipt key's folder>/log-signing.pem"),
    "log_origin": ("the log's origin line and checkpoint key name", "ecert.cbp.example/log"),
    "log_interval_ms": ("how often the sequencer integrates new log entries and signs a checkpoint", "500"),
    "witness_keys": ("note verifier keys of the witnesses whose cosignatures are stored, comma-separated", "none"),
    "max_clock_skew_seconds": ("how far a sender's timestamp (sent_at) may be ahead of customs' clock", "600"),
    "max_envelope_age_seconds": ("how far sent_at may be behind customs' clock (at least the relay's retry horizon)", "7200"),
    "reserved_watches": ("WatchQuotas slots only customs and admins may take", "1"),
    "watches_per_identity": ("WatchQuotas watches one identity may hold", "2"),
    "max_watch_seconds": ("how long one WatchQuotas watch lasts", "3600"),
    "critical_share": ("fill share at which a level turns CRITICAL; a claim that would pass it puts the level on hold", "0.9"),
    "batch_cutoff": ("daily cutoff (HH:MM, quota time zone) deciding claims pending near fill in presentation order", "20:30"),
    "allotments": ("per-replica allotments of open levels: auto (on with PostgreSQL), on or off", "auto"),
    "allotment_share": ("share of a level's limit carved into an allotment at a time (at most 0.1)", "0.01"),
    "quota_timezone": ("quota periods open on their first business day, 00:00 to 12:00 noon here", "America/New_York"),
    "workers": ("worker threads running the handlers (a call waiting for its request holds none)", "16"),
    "db_pool_size": ("database connections", "16"),
    "max_transactions": ("database transactions at once", "16"),
    "transaction_wait_ms": ("how long a call waits for a transaction slot", "1000"),
    "max_concurrent_rpcs": ("calls in flight", "256"),
    "calls_per_identity": ("calls in flight per client identity, counted before the request arrives", "64"),
    "reserved_calls": ("of the calls in flight, how many only customs and admins may take", "32"),
    "reserved_workers": ("of the workers, how many only customs' and admins' calls may run on", "4"),
    "request_arrival_ms": ("how long a call's request message may take to arrive", "10000"),
    "max_streams_per_connection": ("concurrent calls on one HTTP/2 connection", "100"),
    "keepalive_time_ms": ("interval of the server's keepalive pings on each connection", "60000"),
    "keepalive_timeout_ms": ("a connection whose ping is not answered this soon is closed", "20000"),
    "max_connection_idle_ms": ("a connection with no call for this long is closed; 0: never", "300000"),
    "max_connection_age_ms": ("a connection this old is asked to go away (GOAWAY); 0: never", "7200000"),
    "max_connection_age_grace_ms": ("how long the calls of such a connection may still finish", "3900000"),
    "metrics_port": ("HTTP port for /metrics, /healthz and the /quota page; 0 picks one", "off"),
    "metrics_host": ("HTTP listen address", "127.0.0.1"),
    "log_format": ("json or text", "json"),
    "log_level": ("DEBUG, INFO, WARNING or ERROR", "INFO"),
    # ECERT_CLOCK_OFFSET_SECONDS, which main gained meanwhile (for test harnesses); its flag appears once merged.
    "simulated_clock": ("test harnesses only: start the service's clock at this ISO instant and serve ClockService to set it", "off"),
    "clock_offset_seconds": ("test harnesses only: seconds the service's clock runs ahead of the system clock", "0"),
}
# Settings with no variable of their own: a flag of serve decides them (--create-receipt-key).
FLAG_ONLY = frozenset({"create_missing_receipt_key"})
_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "pathlib.Path": pathlib.Path}


def setting_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per setting: None unless the flag is given, so that its variable, the file or
    the default apply. (`ecert --help` builds them, so registering `serve` reads server/config.py, which needs
    nothing but the standard library.)"""
    from server.config import Settings

    parameters = []
    for setting in dataclasses.fields(Settings):
        if setting.name in FLAG_ONLY:
            continue
        what, default = HELP.get(setting.name, ("", ""))
        variable = f"ECERT_{setting.name.upper()}" + (f", default {default}" if default else "")
        option = typer.Option(None, help=f"{what} ({variable})".strip(), show_default=False)
        kind = _TYPES.get(str(setting.type), str)
        parameters.append(inspect.Parameter(setting.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind]))
    return parameters


def register(app: typer.Typer) -> None:
    def serve(
        config: Optional[pathlib.Path] = typer.Option(
            None, "--config", help="TOML file with any of the settings below, keyed by name (ECERT_CONFIG)"),
        insecure: bool = typer.Option(False, "--insecure", help="plaintext gRPC, no roles: local development and tools, loopback only"),
        allow_insecure_remote: bool = typer.Option(
            False, "--allow-insecure-remote", help="with --insecure, also listen on a host that is not loopback (anyone who reaches it has every right)"
        ),
        create_receipt_key: bool = typer.Option(
            False, "--create-receipt-key", help="development only: generate the receipt- and log-signing keys if their files are missing (otherwise refuse to start)"
        ),
        grace: float = typer.Option(10.0, help="seconds in-flight calls get to finish on shutdown"),
        **flags: Any,
    ) -> None:
        """Serve ecert.v1 over gRPC, with health checking and reflection."""
        from server.config import ConfigError, Settings

        try:
            settings = Settings.load(config)
            for name, value in flags.items():
                if value is not None:
                    settings.set(name, value, source=f"--{name.replace('_', '-')}")
            settings.validate()
        except ConfigError as exc:
            raise common.BadInput(str(exc)) from None
        settings.create_missing_receipt_key = create_receipt_key
        if insecure and not settings.listens_on_loopback() and not allow_insecure_remote:
            raise common.BadInput(
                f"--insecure serves without authentication; it listens only on loopback, not {settings.host}, "
                "unless --allow-insecure-remote is given too"
            )
        _serve(settings, insecure=insecure, grace=grace, config=config or os.environ.get("ECERT_CONFIG") or None)

    fixed = [p for p in inspect.signature(serve).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    kinds = {"config": Optional[pathlib.Path], "insecure": bool, "allow_insecure_remote": bool, "create_receipt_key": bool, "grace": float}
    fixed = [p.replace(annotation=kinds[p.name]) for p in fixed]
    parameters = [*fixed, *setting_parameters()]
    serve.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]  # typer reads the signature set on the function
    serve.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    app.command()(database_errors(serve))


def _serve(settings, *, insecure: bool, grace: float, config: object) -> None:  # type: ignore[no-untyped-def]  # `settings` is the server's Settings
    from server.app import create_server, freeze_startup_heap
    from server.observability import logs, tracing

    logs.configure(settings.logging_level(), json_format=settings.log_format != "text")
    if settings.simulated_clock:
        logs.mark_simulated_clock()  # from the first line on, the migrations' included
    try:  # spans recorded; exported only when the OTEL_* variables ask (service_kit/tracing.py)
        tracing.configure("ecert-service")
    except ValueError as exc:
        raise common.BadInput(str(exc)) from None
    credentials = None
    if not insecure:
        from contract.tls_files import TlsMaterialMissing
        from server.adapters.reload import ReloadingTls

        try:  # the TLS folder's files are read again when they change (server/adapters/reload.py)
            credentials = ReloadingTls(settings.resolved_tls_dir()).credentials()
        except TlsMaterialMissing as exc:
            raise common.BadInput(f"{exc}; or start with --insecure for plaintext") from None
        except ValueError as exc:
            raise common.BadInput(f"TLS material in {settings.resolved_tls_dir()}: {exc}") from None
    # Before anything announces the port: a SIGTERM right after the "serving on" line is a graceful stop too,
    # and one that arrives while starting stops the service as soon as it has started.
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    started = time.monotonic()
    from server.adapters.keystore import SigningKeyMissing
    from service_kit.revocation import RevocationListInvalid
    from server.app import ListenError

    try:
        running = create_server(settings, credentials=credentials)
    except (SigningKeyMissing, ListenError, RevocationListInvalid) as exc:
        raise common.BadInput(str(exc)) from None
    except RuntimeError as exc:  # the address cannot be bound (gRPC says only that)
        address = f"{settings.host}:{settings.port}"
        raise common.BadInput(f"cannot listen on {address}: is another process using it? ({exc})") from None
    freeze_startup_heap()
    mode = "mutual TLS" if credentials else "plaintext"
    metrics_url = f"http://{running.http.host}:{running.http.port}/" if running.http is not None else None
    log.info(
        "ecert started: serving on %s:%d (%s), database %s%s", settings.host, running.port, mode,
        shown(settings.resolved_database_url()), f", operator page {metrics_url}" if metrics_url else "",
        extra={"event": "started", "pid": os.getpid(), "address": f"{settings.host}:{running.port}", "tls": bool(credentials),
               "database": shown(settings.resolved_database_url()), "data_dir": str(settings.data_dir),
               "metrics_url": metrics_url, "config_file": str(config) if config else None,
               "workers": settings.workers, "log_level": settings.log_level.upper()},
    )
    # For scripts and tests that wait for the port (kept stable; the log line above has the details).
    typer.echo(f"ecert serving on {settings.host}:{running.port} ({mode})", err=True)
    if running.http is not None:
        typer.echo(f"ecert metrics on http://{running.http.host}:{running.http.port}/metrics", err=True)

    # Waiting in slices: the kernel may deliver SIGTERM to one of gRPC's threads, and then only the main
    # thread's next bytecode runs the handler; a wait without a timeout could sleep through it for ever.
    while not stop.wait(0.5):
        pass
    log.info("ecert stopping on %s: in-flight calls get %.1f s", received[0], grace,
             extra={"event": "stopping", "signal": received[0], "grace_s": grace})
    running.stop(grace)
    log.info("ecert stopped after %.1f s of service", time.monotonic() - started,
             extra={"event": "stopped", "uptime_s": round(time.monotonic() - started, 3)})
