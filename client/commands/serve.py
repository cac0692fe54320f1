"""`ecert serve`: run the certification service until SIGTERM/SIGINT, then shut down gracefully."""
from __future__ import annotations

import logging
import pathlib
import signal
import threading
from typing import Optional

import typer

from server.config import Settings


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: Optional[str] = typer.Option(None, help="listen address (ECERT_HOST, default 127.0.0.1)"),
        port: Optional[int] = typer.Option(None, help="listen port (ECERT_PORT, default 50051; 0 picks a free one)"),
        insecure: bool = typer.Option(False, "--insecure", help="plaintext gRPC, no roles: local development and tools, loopback only"),
        allow_insecure_remote: bool = typer.Option(
            False, "--allow-insecure-remote", help="with --insecure, also listen on a host that is not loopback (anyone who reaches it has every right)"
        ),
        create_receipt_key: bool = typer.Option(
            False, "--create-receipt-key", help="development only: generate the receipt-signing key if its file is missing (otherwise refuse to start)"
        ),
        data_dir: Optional[pathlib.Path] = typer.Option(None, help="keys and SQLite file (ECERT_DATA_DIR)"),
        database_url: Optional[str] = typer.Option(None, help="SQLAlchemy URL (ECERT_DATABASE_URL)"),
        tls_dir: Optional[pathlib.Path] = typer.Option(None, help="ca.pem, cert.pem, key.pem (ECERT_TLS_DIR, default <data dir>/tls)"),
        grace: float = typer.Option(10.0, help="seconds in-flight calls get to finish on shutdown"),
        metrics_port: Optional[int] = typer.Option(
            None, help="HTTP port for /metrics, /healthz and the /quota page (ECERT_METRICS_PORT; off by default; 0 picks one)"
        ),
    ) -> None:
        """Serve ecert.v1 over gRPC, with health checking and reflection."""
        from server.app import create_server, freeze_startup_heap

        from server.observability import logs

        settings = Settings()
        logs.configure(logging.INFO, json_format=settings.log_format != "text")
        if metrics_port is not None:
            settings.metrics_port = str(metrics_port)
        if host is not None:
            settings.host = host
        if port is not None:
            settings.port = port
        if data_dir is not None:
            settings.data_dir = data_dir
        if database_url is not None:
            settings.database_url = database_url
        if tls_dir is not None:
            settings.tls_dir = str(tls_dir)
        settings.create_missing_receipt_key = create_receipt_key
        if insecure and not settings.listens_on_loopback() and not allow_insecure_remote:
            typer.echo(
                f"error: --insecure serves without authentication; it listens only on loopback, not {settings.host}, "
                "unless --allow-insecure-remote is given too",
                err=True,
            )
            raise typer.Exit(2)
        credentials = None
        if not insecure:
            from server.adapters.tls import TlsMaterialMissing, server_credentials

            try:
                credentials = server_credentials(settings.resolved_tls_dir())
            except TlsMaterialMissing as exc:
                typer.echo(f"error: {exc}; or start with --insecure for plaintext", err=True)
                raise typer.Exit(2) from None
        from server.adapters.keystore import ReceiptKeyMissing
        from server.app import ListenError

        try:
            running = create_server(settings, credentials=credentials)
        except (ReceiptKeyMissing, ListenError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        freeze_startup_heap()
        mode = "mutual TLS" if credentials else "plaintext"
        typer.echo(f"ecert serving on {settings.host}:{running.port} ({mode})", err=True)
        if running.http is not None:
            typer.echo(f"ecert metrics on http://{running.http.host}:{running.http.port}/metrics", err=True)

        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
        running.stop(grace)
