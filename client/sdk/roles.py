"""One client per role, each offering the calls that role makes (the service enforces roles itself).

    PartnerClient    a partner government's gateway: seals and transmits certificates, reads its own and their usage
    RelayClient      a network-service provider: forwards sealed envelopes untouched, keeps request ids
    CustomsClient    internal customs systems: decides, files and reverses claims; reads everything
    ImporterClient   an importer of record or its broker: usage of the certificates naming it, quota
    OperatorClient   the operator (admin role): reads certificates, claims, quota (and watches it), health
    LogClient        anyone: the transparency log's checkpoints and proofs (every role above has them too)
    WitnessLogClient a witness: reads checkpoints and proofs, hands in cosignatures

The split follows the service's role table (server/api/auth.py), which has the last word.
"""
from __future__ import annotations

import datetime as dt
import pathlib
from typing import Any

from client.sdk.channel import ConnectionSettings
from client.sdk.log import Cosigning, LogReads
from client.sdk.models import Action, Certificate, SubmitResult, ValidationReport
from client.sdk.services import (
    CertificateReads,
    ClaimReads,
    ClockDriving,
    Matching,
    QuotaReads,
    Transmitting,
    UsageReads,
    seal_envelope,
    unsigned_envelope,
)
from client.sdk.usage import UsageFeed
from contract.keys import load_signer
from contract.signing import Signer
from ecert.v1 import transmission_pb2 as tpb


def load_document_signer(key_file: str | pathlib.Path, key_id: str = "") -> Signer:
    """A partner's Ed25519 document-signing key (PEM); its id from `key_id` or the .key-id file beside it."""
    path = pathlib.Path(key_file)
    if not key_id:
        id_file = path.with_suffix(".key-id")
        if not id_file.is_file():
            raise ValueError(f"no key id given and no {id_file.name} beside {path.name}")
        key_id = id_file.read_text(encoding="utf-8").strip()
    return load_signer(path, key_id)


class PartnerClient(Transmitting, CertificateReads, UsageReads, UsageFeed, LogReads):
    """Seals with the partner's document-signing key (not its TLS key) and transmits."""

    def __init__(self, signer: Signer, sender: str = "MX", settings: ConnectionSettings | None = None, **kwargs: Any):
        super().__init__(settings, **kwargs)
        self.signer = signer
        self.sender = sender

    def seal(
        self, certificate: Certificate, *, action: Any = None, replaces_version: int = 0, message_id: str = "",
        sent_at: dt.datetime | None = None,
    ) -> tpb.SignedEnvelope:
        """The signed envelope, with a fresh message id unless one is given. Keep it to retry it as is."""
        envelope = unsigned_envelope(certificate, sender=self.sender, action=action, replaces_version=replaces_version, message_id=message_id)
        return seal_envelope(envelope, self.signer, sent_at)

    def transmit(
        self, certificate: Certificate, *, action: Any = None, replaces_version: int = 0, message_id: str = "",
        timeout: float | None = None,
    ) -> SubmitResult:
        return self.submit_envelope(self.seal(certificate, action=action, replaces_version=replaces_version, message_id=message_id), timeout=timeout)

    def replace(self, certificate: Certificate, replaces_version: int, **kwargs: Any) -> SubmitResult:
        return self.transmit(certificate, action=Action.REPLACE, replaces_version=replaces_version, **kwargs)

    def cancel(self, certificate_number: str, replaces_version: int, *, issuing_country: str = "", **kwargs: Any) -> SubmitResult:
        stub = Certificate(certificate_number=certificate_number, issuing_country=issuing_country or self.sender)
        return self.transmit(stub, action=Action.CANCEL, replaces_version=replaces_version, **kwargs)

    def validate(self, certificate: Certificate, *, action: Any = None, replaces_version: int = 0, timeout: float | None = None) -> ValidationReport:
        return self.validate_envelope(self.seal(certificate, action=action, replaces_version=replaces_version), timeout=timeout)


class RelayClient(Transmitting, UsageFeed, LogReads):
    """Forwards envelopes as received; pass the inbound call's request id so one id spans every hop."""

    def forward(self, envelope: tpb.SignedEnvelope, *, request_id: str = "", timeout: float | None = None) -> SubmitResult:
        return self.submit_envelope(envelope, request_id=request_id, timeout=timeout)


class CustomsClient(Matching, ClaimReads, UsageReads, UsageFeed, CertificateReads, QuotaReads, LogReads):
    pass


class ImporterClient(UsageReads, QuotaReads, LogReads):
    pass


class OperatorClient(CertificateReads, ClaimReads, UsageReads, UsageFeed, QuotaReads, ClockDriving, LogReads):
    pass


class LogClient(LogReads):
    """Any authenticated party: the transparency log's checkpoints, proofs and entries."""


class WitnessLogClient(LogReads, Cosigning):
    """A witness (role witness): reads checkpoints and consistency proofs, hands in cosignatures."""
