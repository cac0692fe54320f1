"""Who the caller of a mutual-TLS call is: its certificate's identity (contract/identity.py's URIs).

The material itself is read by contract/tls_files.py; the service's reloading credentials are server/adapters/reload.py's."""
from __future__ import annotations

import grpc

from contract.identity import Identity, identity_of_certificate


def peer_identity(context: grpc.ServicerContext) -> Identity | None:
    """The authenticated caller of a call on a mutual-TLS server; None when there is no client certificate."""
    certificates = context.auth_context().get("x509_pem_cert") or []
    return identity_of_certificate(bytes(certificates[0])) if certificates else None
