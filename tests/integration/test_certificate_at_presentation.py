"""The certificate on file at presentation (issue 13, item 5), through the API on both engines.

Source: the eCERT notice (USMCA TPL, Mexico; ../shared/seeds): the TPL claim is matched against the
partner's transmission on file with customs, and "if there is no transmission upon entry summary" the
MFN rate applies. So a claim is matched against the version customs had received at the claim's
presentation time (19 CFR 132.11: the latest of filing, arrival and payment): a transmission that
arrived only later does not count for it; a version on file then and replaced since still does. Each
decision names the version it relied on, customs' receipt for it and the transmission's digest.
"""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from tests.factories import CANCEL, NOW, REPLACE, certificate, claim_line, envelope

PREFERENTIAL = mpb.CLAIM_DECISION_PREFERENTIAL
MFN = mpb.CLAIM_DECISION_MFN_REQUIRED
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def send(transmission, partner, clock):  # type: ignore[no-untyped-def]
    """Transmit as the partner at customs' current (test) time; the receipt."""
    sent = [0]

    def transmit(cert=None, **kwargs):  # type: ignore[no-untyped-def]
        sent[0] += 1
        env = envelope(partner.signer, cert or certificate(), message_id=f"p-{sent[0]}", sent_at=clock.at, **kwargs)
        return transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env)).receipt

    return transmit


def presented_at(at: dt.datetime, transaction: int = 1, **changes: object) -> mpb.EntrySummaryLine:
    return claim_line(transaction, filed_at=at - 2 * HOUR, arrived_at=at - HOUR, paid_at=at, **changes)


def used(server) -> int:  # type: ignore[no-untyped-def]
    """The certificate's used quantity in whole units (stored in millionths)."""
    with server.database.read_engine.connect() as connection:
        return connection.execute(text("SELECT used_quantity FROM certificates")).scalar_one() // 1_000_000


def test_a_transmission_received_after_presentation_does_not_count(server, match, send, clock):
    # The claim was presented three hours before Mexico's transmission reached customs (the issue's
    # finding): MFN, with a reason that says why, and nothing charged.
    clock.at = NOW
    send()
    late = match.MatchClaim(mpb.MatchClaimRequest(line=presented_at(NOW - 3 * HOUR))).result
    assert (late.decision, list(late.reasons)) == (MFN, ["NO_TRANSMISSION", "TRANSMITTED_AFTER_PRESENTATION"])
    assert (late.certificate_version, late.certificate_receipt_id, late.granted_quantity) == (0, "", "0")
    assert used(server) == 0


def test_no_transmission_at_all_is_refused_without_the_later_reason(match, clock):
    result = match.MatchClaim(mpb.MatchClaimRequest(line=presented_at(NOW))).result
    assert (result.decision, list(result.reasons)) == (MFN, ["NO_TRANSMISSION"])


def test_the_decision_names_the_version_receipt_and_digest_it_relied_on(match, send, clock):
    receipt = send()
    result = match.MatchClaim(mpb.MatchClaimRequest(line=presented_at(NOW))).result
    assert result.decision == PREFERENTIAL
    assert result.certificate_version == 1
    assert result.certificate_receipt_id == receipt.receipt_id
    assert result.certificate_digest == receipt.digest_sha256.hex()


def test_a_version_replaced_after_presentation_still_counts(server, match, send, clock):
    # Version 1 is on file when the line is presented; version 2 (another importer) arrives before the
    # claim reaches the service. The claim is matched against version 1, and its charge lands on the
    # certificate as it stands now (version 2's head).
    first = send()
    clock.at = NOW + HOUR
    second = send(certificate(importer_of_record="98-765432100"), action=REPLACE, replaces_version=1)
    assert second.certificate_version == 2
    clock.at = NOW + 2 * HOUR
    result = match.MatchClaim(mpb.MatchClaimRequest(line=presented_at(NOW + dt.timedelta(minutes=30)))).result
    assert (result.decision, result.certificate_version) == (PREFERENTIAL, 1)
    assert result.certificate_receipt_id == first.receipt_id
    assert used(server) == 100
    # A line presented after the replacement is matched against version 2, whose importer differs.
    after = match.MatchClaim(mpb.MatchClaimRequest(line=presented_at(NOW + 90 * dt.timedelta(minutes=1), 2))).result
    assert (after.decision, list(after.reasons), after.certificate_version) == (MFN, ["DATA_MISMATCH"], 2)
    assert after.certificate_receipt_id == second.receipt_id
    assert used(server) == 100


def test_a_cancellation_after_presentation_withdraws_the_certificate(server, match, send, clock):
    # A certificate Mexico canceled can no longer be charged, whenever the claim was presented: the
    # cancellation withdraws it (a choice documented in the README, "Claims").
    send()
    clock.at = NOW + HOUR
    send(certificate(), action=CANCEL, replaces_version=1)
    clock.at = NOW + 2 * HOUR
    result = match.MatchClaim(mpb.MatchClaimRequest(line=presented_at(NOW + dt.timedelta(minutes=30)))).result
    assert (result.decision, list(result.reasons)) == (MFN, ["CERTIFICATE_CANCELED"])
    assert used(server) == 0
