"""Errors as every party reports them: a reason code and a kind, never a transport status.

A refusal reaches the other side as a gRPC status whose ErrorInfo carries the reason in the error
domain (constants.ERROR_DOMAIN) and whose code follows from the kind (service_kit/error_status.py
holds that table). The reasons and the kinds are thus part of the wire contract; the server's domain
raises these errors (server/domain/errors.py re-exports them), and so does the simulated relay.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from contract.findings import Finding


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
