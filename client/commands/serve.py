"""`ecert serve`: run the certification service until SIGTERM/SIGINT, then shut down gracefully.

Every setting (server/config.py) has its flag here, named after it; a flag wins over its ECERT_*
variable, which wins over the configuration file (`--config`), which wins over the default.
The log says when the service started (with what it serves and where its data are) and when it
stopped; every failure to start is one line on stderr and exit status 2 (configuration, TLS
material, a port already taken) or 3 (the database cannot be reached).
"""
from __future__ import annotations

import logging
import os
import pathlib
import signal
import threading
import time
from typing import Optional

import typer

from client.commands import common
from client.commands.database import database_errors, shown

log = logging.getLogger("ecert.serve")


def _opt(variable: str, what: str, default: str) -> typer.models.OptionInfo:
    """A setting's flag: None unless given, so that its variable, the file or the default apply."""
    return typer.Option(None, help=f"{what} (ECERT_{variable}, default {default})", show_default=False)


def register(app: typer.Typer) -> None:
    @app.command()
    @database_errors
    def serve(
        config: Optional[pathlib.Path] = typer.Option(
            None, "--config", help="TOML file with any of the settings below, keyed by name (ECERT_CONFIG)"),
        insecure: bool = typer.Option(False, "--insecure", help="plaintext gRPC, for local development and tools"),
        grace: float = typer.Option(10.0, help="seconds in-flight calls get to finish on shutdown"),
        host: Optional[str] = _opt("HOST", "listen address", "127.0.0.1"),
        port: Optional[int] = _opt("PORT", "listen port; 0 picks a free one", "50051"),
        data_dir: Optional[pathlib.Path] = _opt("DATA_DIR", "keys and the SQLite file", "./ecert-data"),
        database_url: Optional[str] = _opt("DATABASE_URL", "SQLAlchemy URL", "sqlite:///<data dir>/ecert.db"),
        tls_dir: Optional[pathlib.Path] = _opt("TLS_DIR", "ca.pem, cert.pem, key.pem", "<data dir>/tls"),
        trust_store: Optional[pathlib.Path] = _opt(
            "TRUST_STORE", "partners' document-signing keys", "<data dir>/trust/partner-keys.json"),
        receipt_key: Optional[pathlib.Path] = _opt(
            "RECEIPT_KEY", "customs' receipt-signing key, made if missing", "<data dir>/keys/receipt-signing.pem"),
        receipt_key_id: Optional[str] = _opt("RECEIPT_KEY_ID", "the key id receipts name", "us-cbp-receipts-1"),
        recipient: Optional[str] = _opt("RECIPIENT", "the recipient receipts name", "US-CBP"),
        max_clock_skew_seconds: Optional[int] = _opt(
            "MAX_CLOCK_SKEW_SECONDS", "how far a sender's timestamp may be from customs' clock", "600"),
        critical_share: Optional[str] = _opt("CRITICAL_SHARE", "fill share at which a level turns CRITICAL", "0.9"),
        quota_timezone: Optional[str] = _opt("QUOTA_TIMEZONE", "periods open at midnight here", "America/New_York"),
        period_close_grace_days: Optional[int] = _opt(
            "PERIOD_CLOSE_GRACE_DAYS", "days after a period ends that an entry may still be charged to it", "30"),
        workers: Optional[int] = _opt("WORKERS", "gRPC worker threads", "16"),
        db_pool_size: Optional[int] = _opt("DB_POOL_SIZE", "database connections", "16"),
        max_transactions: Optional[int] = _opt("MAX_TRANSACTIONS", "database transactions at once", "16"),
        transaction_wait_ms: Optional[int] = _opt(
            "TRANSACTION_WAIT_MS", "how long a call waits for a transaction slot", "1000"),
        max_concurrent_rpcs: Optional[int] = _opt("MAX_CONCURRENT_RPCS", "calls in flight", "256"),
        metrics_port: Optional[int] = _opt(
            "METRICS_PORT", "HTTP port for /metrics, /healthz and the /quota page; 0 picks one", "off"),
        metrics_host: Optional[str] = _opt("METRICS_HOST", "HTTP listen address", "127.0.0.1"),
        log_format: Optional[str] = _opt("LOG_FORMAT", "json or text", "json"),
        log_level: Optional[str] = _opt("LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR", "INFO"),
    ) -> None:
        """Serve ecert.v1 over gRPC, with health checking and reflection."""
        import dataclasses

        from server.config import ConfigError, Settings

        given = locals()
        flags = {f.name: given[f.name] for f in dataclasses.fields(Settings)}  # a KeyError here: a setting without its flag
        try:
            settings = Settings.load(config)
            for name, value in flags.items():
                if value is not None:
                    settings.set(name, value, source=f"--{name.replace('_', '-')}")
            settings.validate()
        except ConfigError as exc:
            raise common.BadInput(str(exc)) from None
        _serve(settings, insecure=insecure, grace=grace, config=config or os.environ.get("ECERT_CONFIG") or None)


def _serve(settings, *, insecure: bool, grace: float, config: object) -> None:  # type: ignore[no-untyped-def]
    from server.app import create_server, freeze_startup_heap
    from server.observability import logs

    logs.configure(settings.logging_level(), json_format=settings.log_format != "text")
    credentials = None
    if not insecure:
        from server.adapters.reload import ReloadingTls
        from server.adapters.tls import TlsMaterialMissing

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
    try:
        running = create_server(settings, credentials=credentials)
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
