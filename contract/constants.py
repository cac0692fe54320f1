"""Names and formats both ends of a call must spell alike."""
from __future__ import annotations

import re

# google.rpc.ErrorInfo.domain of every error the service returns; the reason codes live under it.
ERROR_DOMAIN = "ecert"
# gRPC metadata key carrying a request's id across every hop (gateway, relay, service) and back in trailers.
REQUEST_ID_HEADER = "x-request-id"
# What an envelope's message id may be: it names the transmission at every hop and in every receipt.
MESSAGE_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
