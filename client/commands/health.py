"""`ecert health`: ask a service's gRPC health (grpc.health.v1) whether it serves, for probes and scripts.

Exit 0 when the answer is SERVING; 1 when the service answers anything else (NOT_SERVING while it
shuts down, SERVICE_UNKNOWN for a name it does not serve); 2 without TLS material (neither --tls-dir
nor --insecure); 3 when nothing answers within the deadline. The container image's HEALTHCHECK and
the compose file's probes run it; it works against `ecert serve` and `ecert relay` alike.
"""
from __future__ import annotations

import pathlib
from typing import Optional

import typer

from client.commands import common


def register(app: typer.Typer) -> None:
    @app.command()
    @common.handle_errors
    def health(
        service: str = typer.Option("", "--service", help="a service's full name (e.g. ecert.v1.MatchService); "
                                                           "default: the whole server"),
        target: Optional[str] = common.TARGET,
        insecure: bool = common.INSECURE,
        tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
        timeout: Optional[float] = typer.Option(None, "--timeout", help="deadline in seconds (ECERT_TIMEOUT, default 10)"),
    ) -> None:
        """Exit 0 if the service's gRPC health answers SERVING; print the status."""
        from grpc_health.v1 import health_pb2

        from client.sdk import NotFound, OperatorClient

        settings = common.settings(target, insecure, tls_dir, timeout)
        with OperatorClient(settings) as client:
            try:
                response = client.call(client.stubs.health.Check, health_pb2.HealthCheckRequest(service=service))
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except NotFound:  # gRPC health answers a name it does not serve with NOT_FOUND
                response, status = None, "SERVICE_UNKNOWN"
        typer.echo(f"{settings.target}{' ' + service if service else ''}: {status}")
        if response is None or response.status != health_pb2.HealthCheckResponse.SERVING:
            raise typer.Exit(common.EXIT_REFUSED)
