"""Python SDK for the eCERT certification service (ecert.v1), one client class per role.

    from client.sdk import CustomsClient, EntryLine
    with CustomsClient(target="127.0.0.1:50051", insecure=True) as customs:
        print(customs.list_quotas())

See the README for an example per role.
"""
from client.sdk.channel import ConnectionSettings, RetryPolicy, current_request_id
from client.sdk.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    EcertError,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from client.sdk.models import (
    Action,
    ActivityEntry,
    Certificate,
    CertificateStatus,
    CertificateUsage,
    ClaimDecision,
    ClaimOutcome,
    ClaimResult,
    Condition,
    EntryLine,
    Outcome,
    Party,
    QuotaEvent,
    QuotaEventKind,
    QuotaState,
    QuotaStatus,
    Receipt,
    Reversal,
    ReversalKind,
    StoredCertificate,
    SubmitResult,
    ValidationReport,
    to_plain,
)
from client.sdk.log import ConsistencyProof, InclusionProof, LogCheckpoint, LoggedEntry
from client.sdk.usage import UsageEvent
from client.sdk.roles import (
    CustomsClient, ImporterClient, LogClient, OperatorClient, PartnerClient, RelayClient, WitnessLogClient, load_document_signer,
)

__all__ = [
    "Aborted", "Action", "ActivityEntry", "AlreadyExists", "Certificate", "CertificateStatus", "CertificateUsage",
    "ClaimDecision", "ClaimOutcome", "ClaimResult", "Condition", "ConnectionSettings", "CustomsClient",
    "DeadlineExceeded", "EcertError", "EntryLine", "FailedPrecondition", "FieldViolation", "ImporterClient",
    "Internal", "InvalidArgument", "NotFound", "OperatorClient", "Outcome", "PartnerClient", "Party",
    "PermissionDenied", "QuotaEvent", "QuotaEventKind", "QuotaState", "QuotaStatus", "Receipt", "RelayClient",
    "ResourceExhausted", "RetryPolicy", "Reversal", "ReversalKind", "StoredCertificate", "SubmitResult",
    "Unauthenticated", "Unavailable", "ValidationReport", "current_request_id", "load_document_signer", "to_plain",
    "ConsistencyProof", "InclusionProof", "LogCheckpoint", "LogClient", "LoggedEntry", "WitnessLogClient",
    "UsageEvent",
]
