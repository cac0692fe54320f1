"""Use cases of the partner-facing API: submit, validate and read certificates."""
from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from contract.log_entry import receipt_entry
from contract.receipt import Outcome, Receipt
from contract.signing import Signer, sha256
from server.adapters.claim_repository import RecordedEntry, recorded
from server.adapters.database import Database
from server.domain.certificate import Certificate, validate_certificate
from server.domain.errors import DomainError, ErrorKind, Finding, Severity, errors_only
from server.domain.records import ActivityEntry, StoredVersion, TransmissionRecord
from server.domain.reference import ReferenceData
from server.domain.transmission import Action, CertificateStatus, Envelope, check_envelope, outcome_for, plan_transition
from server.domain.trust_store import TrustStore
from server.service.clock import Clock, new_id
from server.service.pagination import PageTokens, page_size
from server.service.transactions import run_in_transaction
from server.service.unit_of_work import UnitOfWork


class TransmissionRejected(DomainError):
    """A refused transmission. It carries the signed rejection receipt, which the sender keeps, and
    the receipt's entry in the transparency log."""

    receipt: Receipt
    log_entry: RecordedEntry | None = None

    @classmethod
    def wrap(cls, error: DomainError, receipt: Receipt) -> "TransmissionRejected":
        rejected = cls(error.reason, error.message, error.kind, list(error.findings), dict(error.metadata))
        rejected.receipt = receipt
        return rejected


@dataclass(frozen=True)
class SubmitResult:
    receipt: Receipt
    certificate: StoredVersion
    replayed: bool
    # The receipt's leaf hash in the transparency log (contract/log_entry.py receipt_entry).
    log_leaf_hash: bytes = b""


@dataclass(frozen=True)
class ValidationReport:
    valid: bool
    findings: list[Finding]
    digest: bytes


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str
    # The token of the page that starts after items[i]: for an answer that carries fewer items than
    # asked (the API layer cuts a page that would not fit in one message).
    token_after: Callable[[int], str]


class TransmissionUseCases:
    def __init__(
        self,
        database: Database,
        *,
        trust_store: TrustStore,
        receipt_signer: Signer,
        reference: Callable[[], ReferenceData],
        clock: Clock,
        recipient: str,
        max_clock_skew: dt.timedelta,
        # How far sent_at may run ahead of customs' clock, and how far behind it: the age is at least a
        # relay's retry horizon, so that what a relay acknowledged before an outage is accepted after it.
        max_envelope_age: dt.timedelta,
        page_token_key: bytes | None = None,  # None: a random key, tokens valid in this process only
    ):
        self.database = database
        self.trust_store = trust_store
        self.signer = receipt_signer
        self.reference = reference  # the newest TPL and partner table
        self.clock = clock
        self.recipient = recipient
        self.max_clock_skew = max_clock_skew
        self.max_envelope_age = max_envelope_age
        self.page_tokens = PageTokens(page_token_key) if page_token_key else PageTokens.with_random_key()

    # -- submitting -------------------------------------------------------------------------------

    def submit(self, envelope: Envelope) -> SubmitResult:
        try:
            return self._submit(envelope)
        except TransmissionRejected as rejected:
            # Nothing else of a rejection is stored; its receipt is logged in a transaction of its own.
            receipt = rejected.receipt
            rejected.log_entry = run_in_transaction(self.database, lambda uow: _record_alone(uow, receipt))
            raise

    def _submit(self, envelope: Envelope) -> SubmitResult:
        received_at = self.clock.now()
        digest = envelope.digest()

        def reject(error: DomainError) -> TransmissionRejected:
            return TransmissionRejected.wrap(error, self._receipt(envelope, digest, received_at, Outcome.REJECTED, error.findings, 0))

        try:
            self._verify_signature(envelope)
        except DomainError as error:
            # Never sign a rejection of a message id already accepted (a relay could hold it up
            # against the acceptance). The same content is answered with the receipt it was accepted
            # with: the genuine signature is on file. Other content is refused unsigned, as
            # SIGNATURE_INVALID: what arrived is not what the partner signed (damage on the way, which
            # a relay retries from its stored copy), not a reuse of the id by the partner.
            with UnitOfWork(self.database, write=False) as uow:
                previous = uow.transmissions.get(envelope.sender, envelope.message_id)
                if previous is None:
                    raise reject(error) from None
                if previous.digest != digest:
                    raise error from None
                return self._replayed(uow, envelope, digest, previous)

        certificate, findings = self._check(envelope, received_at)
        if errors_only(findings):
            # A retry of a stored message gets its receipt even if it would be refused now (its
            # sent_at aged out of the accepted window, the reference data changed): replays come first.
            replay = self._replay(envelope, digest)
            if replay is not None:
                return replay
            first = errors_only(findings)[0]
            raise reject(DomainError(first.code, "the transmission has invalid fields", ErrorKind.INVALID, findings))

        country = envelope.certificate.issuing_country
        number = envelope.certificate.certificate_number
        assert envelope.action is not None
        action = envelope.action

        def store(uow: UnitOfWork) -> SubmitResult:
            # Runs again after a lost race (server/service/transactions.py): read everything here.
            head = uow.certificates.head(country, number, for_update=True)
            # After the head, not before: at READ COMMITTED each statement sees the latest commits, so
            # a twin of this message that created the head we just read is visible here too.
            previous = uow.transmissions.get(envelope.sender, envelope.message_id)
            if previous is not None:
                replay = self._replayed(uow, envelope, digest, previous)
                # Nothing to store; committing waits until what was read is durable (SQLite's group
                # commit may not have flushed the twin yet) before the retry is answered.
                uow.commit()
                return replay
            try:
                transition = plan_transition(action, envelope.replaces_version, certificate, head)
            except DomainError as error:
                raise reject(error) from None
            stored_certificate = certificate
            if stored_certificate is None:  # CANCEL: the canceled version repeats the last one's elements
                found = uow.certificates.on_file(country, number)
                assert found is not None
                stored_certificate = found[0]
            receipt = self._receipt(envelope, digest, received_at, outcome_for(findings), findings, transition.version)
            transmission_id = uow.transmissions.add(
                receipt=receipt,
                issuing_country=country,
                sent_at=envelope.sent_at,
                key_id=envelope.key_id,
                signed_bytes=envelope.signed_bytes(),
                signature=envelope.signature,
            )
            logged = uow.audit.record([recorded(receipt_entry(receipt))])[0]
            uow.certificates.add_version(
                certificate=stored_certificate,
                version=transition.version,
                status=transition.status,
                transmission_id=transmission_id,
                at=received_at,
                head=head,
            )
            # Read back in the same transaction: the answer shows exactly what was stored, without a
            # second round trip after the commit.
            stored_version = uow.certificates.version(country, number, transition.version)
            assert stored_version is not None
            uow.commit()  # stored first; only then answered
            return SubmitResult(receipt, stored_version, replayed=False, log_leaf_hash=logged.leaf_hash)

        return run_in_transaction(self.database, store)

    def validate(self, envelope: Envelope) -> ValidationReport:
        """Every check of submit, reported as findings; nothing is stored."""
        received_at = self.clock.now()
        digest = envelope.digest()
        findings: list[Finding] = []
        try:
            self._verify_signature(envelope)
        except DomainError as error:
            findings.extend(error.findings)
        certificate, certificate_findings = self._check(envelope, received_at)
        with UnitOfWork(self.database, write=False) as uow:
            previous = uow.transmissions.get(envelope.sender, envelope.message_id)
            if previous is not None:
                findings.append(_reused_finding(previous.digest == digest))
            findings.extend(certificate_findings)
            if not errors_only(findings) and envelope.action is not None:
                head = uow.certificates.head(envelope.certificate.issuing_country, envelope.certificate.certificate_number)
                try:
                    plan_transition(envelope.action, envelope.replaces_version, certificate, head)
                except DomainError as error:
                    findings.extend(error.findings or [Finding(error.reason, "certificate.certificate_number", error.message)])
        return ValidationReport(not errors_only(findings), findings, digest)

    def _verify_signature(self, envelope: Envelope) -> None:
        self.trust_store.verify(
            sender=envelope.sender,
            key_id=envelope.key_id,
            signature=envelope.signature,
            data=envelope.signed_bytes(),
            signed_at=envelope.sent_at,
        )

    def _check(self, envelope: Envelope, received_at: dt.datetime) -> tuple[Certificate | None, list[Finding]]:
        findings = check_envelope(envelope, received_at, self.max_clock_skew, self.max_envelope_age)
        if envelope.action is Action.CANCEL:
            findings.extend(_cancel_findings(envelope))
            return None, findings
        certificate, certificate_findings = validate_certificate(
            envelope.certificate, self.reference(), envelope.sender, received_at.date()
        )
        return certificate, findings + certificate_findings

    def _replay(self, envelope: Envelope, digest: bytes) -> SubmitResult | None:
        with UnitOfWork(self.database, write=False) as uow:
            previous = uow.transmissions.get(envelope.sender, envelope.message_id)
            return None if previous is None else self._replayed(uow, envelope, digest, previous)

    def _replayed(self, uow: UnitOfWork, envelope: Envelope, digest: bytes, previous: TransmissionRecord) -> SubmitResult:
        """The answer to a retry: the original receipt, or ALREADY_EXISTS if the content differs."""
        if previous.digest != digest:
            finding = _reused_finding(False)
            raise DomainError(
                finding.code,
                "this message id was already used for a transmission with other content",
                ErrorKind.ALREADY_EXISTS,
                [finding],
                metadata={"receipt_id": previous.receipt.receipt_id},
            )
        receipt = previous.receipt
        stored = uow.certificates.version(
            envelope.certificate.issuing_country, receipt.certificate_number, receipt.certificate_version
        )
        assert stored is not None
        return SubmitResult(receipt, stored, replayed=True, log_leaf_hash=receipt_entry(receipt).leaf_hash)

    def _receipt(
        self,
        envelope: Envelope,
        digest: bytes,
        received_at: dt.datetime,
        outcome: Outcome,
        findings: list[Finding],
        version: int,
    ) -> Receipt:
        return Receipt(
            receipt_id=new_id("R"),
            message_id=envelope.message_id,
            sender=envelope.sender,
            recipient=self.recipient,
            digest=digest,
            received_at=received_at,
            outcome=outcome,
            issues=tuple(findings),
            action=envelope.action.value if envelope.action else "UNSPECIFIED",
            certificate_number=envelope.certificate.certificate_number,
            certificate_version=version,
            signing_key_id=self.signer.key_id,
            signature_sha256=sha256(envelope.signature),
        ).signed_by(self.signer)

    # -- reading ----------------------------------------------------------------------------------

    def get(self, country: str, number: str, version: int) -> StoredVersion:
        _require({"issuing_country": country, "certificate_number": number})
        if version < 0:
            raise _invalid("VERSION_NEGATIVE", "version", "must be 0 (latest) or a version number")
        with UnitOfWork(self.database, write=False) as uow:
            stored = uow.certificates.version(country, number, version)
            if stored is not None:  # what the partner signed, so that a reader can re-check it
                stored = replace(stored, evidence=uow.certificates.evidence(country, number, stored.version))
        if stored is None:
            raise DomainError(
                "CERTIFICATE_NOT_FOUND",
                "no such certificate" + (f" version {version}" if version else ""),
                ErrorKind.NOT_FOUND,
            )
        return stored

    def list(
        self,
        country: str,
        *,
        page_size_requested: int,
        page_token: str,
        status: CertificateStatus | None,
        quota_year: int,
        tpl_number: str,
    ) -> Page[StoredVersion]:
        _require({"issuing_country": country})
        filters: dict[str, object] = {"country": country, "status": status.value if status else "", "year": quota_year, "tpl": tpl_number}
        size = page_size(page_size_requested)
        after = self.page_tokens.decode(page_token, filters)
        with UnitOfWork(self.database, write=False) as uow:
            rows = uow.certificates.list_latest(
                country, after=after, limit=size + 1, status=status, quota_year=quota_year, tpl_number=tpl_number
            )
        return self._page(rows, size, filters, lambda row: row.certificate.certificate_number)

    def activity_report(
        self, country: str, *, condition: int, quota_year: int, page_size_requested: int, page_token: str
    ) -> Page[ActivityEntry]:
        _require({"issuing_country": country})
        if condition not in (10, 11, 12):
            raise _invalid("CONDITION_MISSING", "condition", "must be MATCHED, UNMATCHED or CANCELED")
        filters: dict[str, object] = {"country": country, "condition": condition, "year": quota_year}
        size = page_size(page_size_requested)
        after = self.page_tokens.decode(page_token, filters)
        with UnitOfWork(self.database, write=False) as uow:
            rows = uow.certificates.activity(country, condition=condition, quota_year=quota_year, after=after, limit=size + 1)
        return self._page(rows, size, filters, lambda row: row.certificate_number)

    def _page(self, rows: builtins.list[T], size: int, filters: dict[str, object], position: Callable[[T], str]) -> Page[T]:
        """`rows` holds up to size + 1 rows: one more than the page says whether another page follows."""
        more = len(rows) > size
        rows = rows[:size]

        def token_after(index: int) -> str:
            return self.page_tokens.encode(position(rows[index]), filters)

        return Page(rows, token_after(len(rows) - 1) if more else "", token_after)


def _record_alone(uow: UnitOfWork, receipt: Receipt) -> RecordedEntry:
    entry = uow.audit.record([recorded(receipt_entry(receipt))])[0]
    uow.commit()
    return entry


def _reused_finding(same_content: bool) -> Finding:
    if same_content:
        return Finding("MESSAGE_ALREADY_RECEIVED", "message_id", "already received; a retry returns the original receipt", Severity.WARNING)
    return Finding("MESSAGE_ID_REUSED", "message_id", "already used for a transmission with other content")


def _cancel_findings(envelope: Envelope) -> list[Finding]:
    draft = envelope.certificate
    findings = []
    if not draft.certificate_number:
        findings.append(Finding("FIELD_REQUIRED", "certificate.certificate_number", "is required"))
    if draft.issuing_country != envelope.sender:
        findings.append(Finding("COUNTRY_NOT_SENDERS", "certificate.issuing_country", "a partner may only cancel its own certificates"))
    return findings


def _invalid(code: str, field: str, description: str) -> DomainError:
    return DomainError(code, f"{field} {description}", ErrorKind.INVALID, [Finding(code, field, description)])


def _require(fields: dict[str, str]) -> None:
    missing = [Finding("FIELD_REQUIRED", name, "is required") for name, value in fields.items() if not value]
    if missing:
        raise DomainError("FIELD_REQUIRED", "required fields are missing", ErrorKind.INVALID, missing)
