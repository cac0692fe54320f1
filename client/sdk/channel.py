"""Opening a channel to the service: TLS material, retry policy, deadlines and the request id.

Retries happen inside gRPC (a channel service config), only on UNAVAILABLE, with exponential
backoff. Every RPC of ecert.v1 is safe to repeat: SubmitCertificate is deduplicated by the
envelope's message id, MatchClaim by entry number and line, the rest only read.
"""
from __future__ import annotations

import contextvars
import json
import os
import pathlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from contract.constants import REQUEST_ID_HEADER
from contract.tls_files import CA_FILE, CERT_FILE, KEY_FILE

SERVICES = ("ecert.v1.TransmissionService", "ecert.v1.MatchService", "ecert.v1.QuotaService")

# A request id set here (e.g. by a relay forwarding a partner's call) is sent instead of a fresh one.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("ecert_request_id", default="")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 3.0
    multiplier: float = 2.0

    def service_config(self) -> str:
        return json.dumps(
            {
                "methodConfig": [
                    {
                        "name": [{"service": s} for s in SERVICES],
                        "retryPolicy": {
                            "maxAttempts": self.max_attempts,
                            "initialBackoff": f"{self.initial_backoff_s}s",
                            "maxBackoff": f"{self.max_backoff_s}s",
                            "backoffMultiplier": self.multiplier,
                            "retryableStatusCodes": ["UNAVAILABLE"],
                        },
                    }
                ]
            }
        )


@dataclass(frozen=True)
class ConnectionSettings:
    """Where the service is and how to reach it. `from_env()` reads ECERT_TARGET and ECERT_CLIENT_TLS_*."""

    target: str = "127.0.0.1:50051"
    insecure: bool = False
    # Mutual TLS: PEM files. `tls_dir` holds ca.pem, cert.pem, key.pem; the single paths override it.
    tls_dir: pathlib.Path | None = None
    ca_file: pathlib.Path | None = None
    cert_file: pathlib.Path | None = None
    key_file: pathlib.Path | None = None
    server_name: str = ""  # TLS name to expect when the target is an address the certificate does not name
    timeout_s: float = 10.0  # default deadline of each unary call
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        for name in ("tls_dir", "ca_file", "cert_file", "key_file"):  # accept str paths too
            value = getattr(self, name)
            if value is not None and not isinstance(value, pathlib.Path):
                object.__setattr__(self, name, pathlib.Path(value))

    @classmethod
    def from_env(cls, **overrides: Any) -> ConnectionSettings:
        env = os.environ.get

        def path(name: str) -> pathlib.Path | None:
            value = env(name, "")
            return pathlib.Path(value) if value else None

        values: dict[str, Any] = {
            "target": env("ECERT_TARGET", "127.0.0.1:50051"),
            "insecure": env("ECERT_INSECURE", "") in ("1", "true", "yes"),
            "tls_dir": path("ECERT_CLIENT_TLS_DIR"),
            "ca_file": path("ECERT_CLIENT_TLS_CA"),
            "cert_file": path("ECERT_CLIENT_TLS_CERT"),
            "key_file": path("ECERT_CLIENT_TLS_KEY"),
            "timeout_s": float(env("ECERT_TIMEOUT", "10")),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def _pem(self, explicit: pathlib.Path | None, name: str) -> bytes | None:
        path = explicit or (self.tls_dir / name if self.tls_dir else None)
        return path.read_bytes() if path else None

    def credentials(self) -> grpc.ChannelCredentials:
        """Reads the PEM files now, so that a missing file fails here (OSError), not on the first call."""
        ca = self._pem(self.ca_file, CA_FILE)
        cert = self._pem(self.cert_file, CERT_FILE)
        key = self._pem(self.key_file, KEY_FILE)
        if (cert is None) != (key is None):
            raise ValueError("a client certificate needs its private key, and a key its certificate")
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


class _RequestIdInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `x-request-id` to each call: the caller's, the context's, or a fresh one. Retries reuse it."""

    def __init__(self, supplier: Callable[[], str]):
        self.supplier = supplier

    def _with_id(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or ())
        if not any(k == REQUEST_ID_HEADER for k, _ in metadata):
            metadata.append((REQUEST_ID_HEADER, self.supplier()))
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]  # grpc is untyped
        return continuation(self._with_id(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]  # grpc is untyped
        return continuation(self._with_id(client_call_details), request)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


def transmission_metadata(message_id: str) -> tuple[tuple[str, str], ...]:
    """A transmission's request id is its message id: the gateway, the relay (which forwards later,
    from its store) and the service can all name it without storing anything more."""
    return ((REQUEST_ID_HEADER, message_id),)


def new_request_id() -> str:
    return current_request_id.get() or uuid.uuid4().hex


def open_channel(settings: ConnectionSettings) -> grpc.Channel:
    options = [
        ("grpc.service_config", settings.retry.service_config()),
        ("grpc.enable_retries", 1),
        *settings.options,
    ]
    if settings.server_name:
        options.append(("grpc.ssl_target_name_override", settings.server_name))
    if settings.insecure:
        channel = grpc.insecure_channel(settings.target, options=options)
    else:
        channel = grpc.secure_channel(settings.target, settings.credentials(), options=options)
    return grpc.intercept_channel(channel, _RequestIdInterceptor(new_request_id))
