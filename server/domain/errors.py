"""Domain errors: a reason code and a kind, never a transport status.

The API layer maps each `ErrorKind` to a gRPC status code in one table (server/api/errors.py);
the domain only says what went wrong and with which fields.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

# Findings are part of the wire contract (a receipt signs them); the domain reports with them.
from contract.findings import Finding as Finding
from contract.findings import Severity as Severity


class ErrorKind(enum.Enum):
    INVALID = "invalid"  # the request itself is malformed
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    PRECONDITION = "precondition"  # the system's state does not allow it
    CONFLICT = "conflict"  # optimistic concurrency: a stale version
    PERMISSION = "permission"
    EXHAUSTED = "exhausted"  # a resource limit was hit; retry later
    UNAVAILABLE = "unavailable"
    UNAUTHENTICATED = "unauthenticated"  # no verifiable caller identity
    DEADLINE = "deadline"  # the caller's deadline passed before the work could be committed


@dataclass
class DomainError(Exception):
    reason: str
    message: str
    kind: ErrorKind = ErrorKind.INVALID
    findings: list[Finding] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def errors_only(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.ERROR]
