"""Domain errors: a reason code and a kind, never a transport status.

The error types are the wire contract's (contract/errors.py: the relay raises them too); the API layer
maps each `ErrorKind` to a gRPC status code in one table (service_kit/error_status.py). The domain only
says what went wrong and with which fields.
"""
from __future__ import annotations

from contract.errors import DomainError as DomainError
from contract.errors import ErrorKind as ErrorKind

# Findings are part of the wire contract (a receipt signs them); the domain reports with them.
from contract.findings import Finding as Finding
from contract.findings import Severity as Severity


def errors_only(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.ERROR]
