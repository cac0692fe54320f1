"""`ecert relay`: run the simulated network-provider relay until SIGTERM/SIGINT."""
from __future__ import annotations

import logging
import os
import pathlib
import signal
import threading
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def relay(
        service: str = typer.Option("127.0.0.1:50051", envvar="ECERT_RELAY_SERVICE", help="customs' address"),
        host: str = typer.Option("127.0.0.1", help="listen address"),
        port: int = typer.Option(50052, help="listen port (0 picks a free one)"),
        tls_dir: Optional[pathlib.Path] = typer.Option(None, envvar="ECERT_RELAY_TLS_DIR", help="the relay's ca.pem, cert.pem, key.pem"),
        revocation_list: Optional[pathlib.Path] = typer.Option(
            None, envvar="ECERT_RELAY_REVOCATION_LIST",
            help="CRL of revoked client certificates, read again when it changes [default: <tls dir>/crl.pem once it exists]"),
        insecure: bool = typer.Option(False, "--insecure", help="plaintext both ways, for local development"),
        store: pathlib.Path = typer.Option(pathlib.Path("relay-data/relay.db"), envvar="ECERT_RELAY_STORE", help="durable SQLite store"),
        retry_horizon: float = typer.Option(3600.0, help="seconds after acceptance to keep retrying"),
        backoff_base: float = typer.Option(0.05, help="first retry delay cap, seconds (doubles per attempt)"),
        backoff_cap: float = typer.Option(5.0, help="largest retry delay cap, seconds"),
        drop: float = typer.Option(0.0, help="fault: probability an attempt or its answer is lost"),
        delay_ms: int = typer.Option(0, help="fault: each attempt waits up to this many ms"),
        duplicate: float = typer.Option(0.0, help="fault: probability an envelope is sent twice"),
        reorder: bool = typer.Option(False, "--reorder", help="fault: forward due envelopes in random order"),
        corrupt: float = typer.Option(0.0, help="fault: probability one byte of the certificate is changed"),
        unavailable: float = typer.Option(0.0, help="fault: probability customs answers UNAVAILABLE"),
        seed: Optional[int] = typer.Option(None, help="seed of the fault and jitter generator"),
        metrics_port: Optional[int] = typer.Option(None, help="serve Prometheus /metrics on this port (0 picks one)"),
    ) -> None:
        """Accept partners' envelopes over mutual TLS, store them, forward them to customs with retries."""
        from gateway_sim.relay.app import RelaySettings, create_relay
        from gateway_sim.relay.faults import Faults
        from gateway_sim.relay.forwarder import RetryPolicy
        from service_kit import logs, tracing
        from service_kit.revocation import RevocationListInvalid

        # Like `ecert serve`: JSON lines with request ids (ECERT_LOG_FORMAT=text for plain text), traced.
        logs.configure(logging.INFO, json_format=os.environ.get("ECERT_LOG_FORMAT", "json") != "text")
        try:
            tracing.configure("ecert-relay")
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if not insecure and tls_dir is None:
            typer.echo("error: give --tls-dir (see `ecert pki init`) or --insecure", err=True)
            raise typer.Exit(2)
        settings = RelaySettings(
            store=store,
            service=service,
            tls_dir=None if insecure else tls_dir,
            listen=f"{host}:{port}",
            faults=Faults(drop=drop, delay_ms=delay_ms, duplicate=duplicate, reorder=reorder, corrupt=corrupt, unavailable=unavailable, seed=seed),
            policy=RetryPolicy(base_seconds=backoff_base, cap_seconds=backoff_cap, horizon_seconds=retry_horizon),
            metrics_port=metrics_port,
            revocation_list=revocation_list,
        )
        try:
            running = create_relay(settings)
        except RevocationListInvalid as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"ecert relay listening on {host}:{running.port} ({'plaintext' if insecure else 'mutual TLS'})", err=True)
        if running.http is not None:
            typer.echo(f"ecert relay metrics on http://{running.http.host}:{running.http.port}/metrics", err=True)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(0.5):  # in slices: SIGTERM may land on a gRPC thread (see `ecert serve`)
            pass
        running.stop()
