"""Mutual-TLS credentials from a `--tls-dir` (contract/tls_files.py) for the parties around the service:
channels to the service or a relay, and the credentials of a plain mTLS server (the simulated relay, the
bench's echo server). The service's own, reloadable credentials are server/adapters/reload.py's."""
from __future__ import annotations

import pathlib

import grpc

from contract.tls_files import read_tls_dir


def server_credentials(directory: str | pathlib.Path) -> grpc.ServerCredentials:
    """Mutual TLS: a client must present a certificate chaining to ca.pem, or the handshake fails."""
    ca, cert, key = read_tls_dir(pathlib.Path(directory))
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(directory: str | pathlib.Path) -> grpc.ChannelCredentials:
    ca, cert, key = read_tls_dir(pathlib.Path(directory))
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def secure_channel(target: str, directory: str | pathlib.Path, options: list[tuple[str, object]] | None = None) -> grpc.Channel:
    return grpc.secure_channel(target, channel_credentials(directory), options=options or [])
