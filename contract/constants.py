"""Names both ends of a call must spell alike."""
from __future__ import annotations

# google.rpc.ErrorInfo.domain of every error the service returns; the reason codes live under it.
ERROR_DOMAIN = "ecert"
# gRPC metadata key carrying a request's id across every hop (gateway, relay, service) and back in trailers.
REQUEST_ID_HEADER = "x-request-id"
