"""Findings: coded observations about one field of a document (TransmissionIssue on the wire).

A receipt signs its findings, so their shape and the severity words are part of the contract.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.Enum):
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    """One coded observation about one field of a request."""

    code: str
    field: str
    description: str
    severity: Severity = Severity.ERROR

