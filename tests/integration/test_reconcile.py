"""`ecert audit reconcile` finds each kind of drift an insider or a bug could leave, on each engine.

Every case starts from a balanced ledger made through the real server (claims, a partial fill, a
cancellation, an aggregate), checks it reconciles, then changes one stored total or record directly
in the database, as a bug or an insider with write access would, within the bounds the CHECK
constraints allow (those are the database's own refusal; see test_ledger_invariants.py).
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from sqlalchemy import text

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from server.service.reconcile import reconcile_ledger
from tests.factories import certificate, claim_line, envelope, run_cutoff_batch, small_levels
from tests.processes import ROOT

FABRIC = {"tpl_number": "9823.53.04", "htsus_number": "5208.12.4020", "unit": "M2"}


@pytest.fixture
def ledger(server, match, transmission, partner, clock):  # type: ignore[no-untyped-def]
    server.use_cases.references.load(small_levels("reconcile", {"9823.53.04": "100", "9823.53.03": "100000"}))
    for n, number in enumerate(["MX26-00000001", "MX26-00000002"]):
        cert = certificate(number, quantity="80", **FABRIC)
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, cert, message_id=f"r-{n}")))
    lines = [claim_line(n + 1, certificate_number=f"MX26-0000000{n % 2 + 1}", quantity="30", **FABRIC) for n in range(4)]
    decisions = [match.MatchClaim(mpb.MatchClaimRequest(line=line)).result.decision for line in lines]
    assert decisions == [mpb.CLAIM_DECISION_PREFERENTIAL] * 3 + [mpb.CLAIM_DECISION_PENDING]  # 90 of 100: the fourth waits
    assert reconcile_ledger(server.database).drifts == []  # a pending claim's reservation is accounted for
    run_cutoff_batch(server, clock)
    fourth = match.GetClaim(mpb.GetClaimRequest(entry_number=lines[3].entry_number, line_number=1)).result
    assert (fourth.decision, fourth.granted_quantity) == (mpb.CLAIM_DECISION_PARTIAL, "10")  # 30+30+30+10 of 100
    match.ReverseClaim(mpb.ReverseClaimRequest(entry_number=lines[0].entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CANCELED))
    assert reconcile_ledger(server.database).drifts == []
    return server


def tamper(server, sql: str) -> None:  # type: ignore[no-untyped-def]
    with server.database.write_engine.begin() as connection:
        assert connection.execute(text(sql)).rowcount >= 1


def kinds(server) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {(d.kind, d.subject) for d in reconcile_ledger(server.database).drifts}


def test_a_level_total_changed_alone_drifts_from_its_ledger_and_its_claims(ledger):  # type: ignore[no-untyped-def]
    tamper(ledger, "UPDATE quota_levels SET charged = charged - 10000000 WHERE tpl_number = '9823.53.04' AND quota_year = 2026")
    assert kinds(ledger) == {("LEVEL_LEDGER_DRIFT", "level:9823.53.04/2026"), ("LEVEL_CLAIMS_DRIFT", "level:9823.53.04/2026")}


def test_a_ledger_row_removed_is_found(ledger):  # type: ignore[no-untyped-def]
    tamper(ledger, "DELETE FROM quota_ledger WHERE kind = 'REVERSAL' AND tpl_number = '9823.53.03'")
    assert kinds(ledger) == {("LEVEL_LEDGER_DRIFT", "level:9823.53.03/2026")}  # the aggregate's copy of the release


def test_a_claim_marked_reversed_without_its_release_is_found(ledger):  # type: ignore[no-untyped-def]
    # The double release of finding 1, seen from the other side: a live grant that no longer holds.
    tamper(ledger, "UPDATE claims SET reversed_at = decided_at, reversal_kind = 'CANCELED' "
                   "WHERE reversed_at IS NULL AND decision = 'PARTIAL'")
    assert kinds(ledger) == {
        ("LEVEL_CLAIMS_DRIFT", "level:9823.53.04/2026"), ("LEVEL_CLAIMS_DRIFT", "level:9823.53.03/2026"),
        ("CERTIFICATE_USE_DRIFT", "certificate:MX/MX26-00000002"), ("CERTIFICATE_ENTRIES_DRIFT", "certificate:MX/MX26-00000002"),
    }


def test_a_certificates_use_changed_alone_is_found(ledger):  # type: ignore[no-untyped-def]
    tamper(ledger, "UPDATE certificates SET used_quantity = 0 WHERE certificate_number = 'MX26-00000001'")
    assert kinds(ledger) == {("CERTIFICATE_USE_DRIFT", "certificate:MX/MX26-00000001")}


def test_room_given_to_a_replica_that_the_level_does_not_escrow_is_found(ledger):  # type: ignore[no-untyped-def]
    # Per-replica allotments (server/service/allotments.py): an insider carving room for a replica
    # without the level row escrowing it would let that replica charge past the limit.
    tamper(ledger, "INSERT INTO quota_allotments (tpl_number, quota_year, holder, room, used, touched_at) "
                   "VALUES ('9823.53.04', 2026, 'R-insider', 5000000, 0, CURRENT_TIMESTAMP)")
    assert kinds(ledger) == {("LEVEL_ESCROW_DRIFT", "level:9823.53.04/2026")}


def test_a_charge_made_up_in_an_allotment_is_found(ledger):  # type: ignore[no-untyped-def]
    # Escrowed (so the level's own balance stays consistent) but charged by no claim and no ledger row.
    tamper(ledger, "UPDATE quota_levels SET escrowed = escrowed + 5000000 WHERE tpl_number = '9823.53.04' AND quota_year = 2026")
    tamper(ledger, "INSERT INTO quota_allotments (tpl_number, quota_year, holder, room, used, touched_at) "
                   "VALUES ('9823.53.04', 2026, 'R-insider', 0, 5000000, CURRENT_TIMESTAMP)")
    assert kinds(ledger) == {("LEVEL_LEDGER_DRIFT", "level:9823.53.04/2026"), ("LEVEL_CLAIMS_DRIFT", "level:9823.53.04/2026")}


def test_the_command_prints_one_line_per_drift_and_exits_1(ledger, settings):  # type: ignore[no-untyped-def]
    url = settings.resolved_database_url()
    run = lambda: subprocess.run([sys.executable, "-m", "client.cli", "audit", "reconcile", "--database-url", url],  # noqa: E731
                                 cwd=ROOT, capture_output=True, text=True, timeout=120)
    balanced = run()
    assert balanced.returncode == 0 and balanced.stdout.startswith("ledger balanced:"), balanced.stderr
    tamper(ledger, "UPDATE certificates SET used_quantity = 0 WHERE certificate_number = 'MX26-00000001'")
    drifted = run()
    assert drifted.returncode == 1
    first, last = drifted.stderr.splitlines()
    assert first == "CERTIFICATE_USE_DRIFT certificate:MX/MX26-00000001: stored 0, expected 30"
    assert re.fullmatch(r"ledger DRIFT: 1 finding\(s\) over \d+ levels and 2 certificates", last), last
