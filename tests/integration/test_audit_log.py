"""The audit log (the transparency log's entries): every receipt, decision, reversal and reference change;
tampering is found."""
from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy import text

from contract.log_entry import LogEntry
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from server.service.audit import verify_audit_log
from tests.factories import claim_line, envelope, small_levels


def ecert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli", *args], capture_output=True, text=True, timeout=60)


def entries(server) -> list[LogEntry]:  # type: ignore[no-untyped-def]
    with server.database.read_engine.connect() as connection:
        return [LogEntry.decode(bytes(row[0])) for row in connection.execute(text("SELECT entry FROM log_entries ORDER BY id"))]


def test_decisions_reversals_and_reference_changes_are_logged(match, transmission, partner, server, settings):
    server.use_cases.references.load(small_levels("audit-1", {"9823.53.01": "1000"}))
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer)))
    first = match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(1))).result
    match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(2, unit="KG")))
    match.ReverseClaim(mpb.ReverseClaimRequest(entry_number=first.entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CANCELED))
    logged = entries(server)
    # Two packaged defaults and the test table, the receipt, two decisions, one reversal.
    assert [e.kind for e in logged] == ["REFERENCE_DATA", "REFERENCE_DATA", "REFERENCE_DATA", "RECEIPT", "DECISION", "DECISION", "REVERSAL"]
    facts = next(e.facts for e in logged if e.kind == "DECISION")
    assert facts["decision"] == "PREFERENTIAL" and facts["factor"] == "6.0@sme-statistical-lines-2026.1"
    server.use_cases.log.integrate()
    result = verify_audit_log(server.database, server.use_cases.log.verifier)
    assert result.intact and result.records == 7

    url = settings.resolved_database_url()
    verified = ecert("audit", "verify", "--database-url", url, "--log-key", server.use_cases.log.verifier.text())
    assert verified.returncode == 0 and "7 records verified" in verified.stdout, verified.stderr


def test_tampering_is_reported_at_the_first_broken_entry(match, transmission, partner, server, settings):
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer)))
    for n in range(1, 4):
        match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(n)))
    server.use_cases.log.integrate()
    with server.database.write_engine.begin() as connection:
        # Someone rewrites history: the second decision now says MFN.
        row = connection.execute(text("SELECT log_index, entry FROM log_entries WHERE kind = 'DECISION' ORDER BY log_index")).fetchall()[1]
        connection.execute(text("UPDATE log_entries SET entry = :e WHERE log_index = :i"),
                           {"e": bytes(row[1]).replace(b"PREFERENTIAL", b"MFN_REQUIRED"), "i": row[0]})
    broken = ecert("audit", "verify", "--database-url", settings.resolved_database_url(), "--log-key", server.use_cases.log.verifier.text(), "--json")
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert report["intact"] is False and report["first_broken"] == row[0]


def test_removing_the_last_entry_is_reported(match, transmission, partner, server):
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer)))
    match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(1)))
    server.use_cases.log.integrate()
    with server.database.write_engine.begin() as connection:
        last = connection.execute(text("SELECT max(log_index) FROM log_entries")).scalar_one()
        connection.execute(text("DELETE FROM log_entries WHERE log_index = :i"), {"i": last})
    result = verify_audit_log(server.database, server.use_cases.log.verifier)
    assert not result.intact and result.records == last


def test_reference_cli_loads_a_version_and_refuses_a_changed_one(tmp_path, server, settings):
    url = settings.resolved_database_url()
    document = tmp_path / "tpls.json"
    document.write_text(small_levels("cli-1", {"9823.53.01": "5000"}))
    loaded = ecert("reference", "load", str(document), "--database-url", url)
    assert loaded.returncode == 0 and "tpls version cli-1 loaded" in loaded.stdout
    again = ecert("reference", "load", str(document), "--database-url", url)
    assert again.returncode == 0 and "already loaded" in again.stdout
    document.write_text(small_levels("cli-1", {"9823.53.01": "6000"}))
    changed = ecert("reference", "load", str(document), "--database-url", url)
    assert changed.returncode == 1 and "REFERENCE_VERSION_EXISTS" in changed.stderr
    garbage = tmp_path / "bad.json"
    garbage.write_text('{"kind": "conversion", "version": "x"}')
    bad = ecert("reference", "load", str(garbage), "--database-url", url)
    assert bad.returncode == 1 and "REFERENCE_DATA_INVALID" in bad.stderr
    listing = json.loads(ecert("reference", "list", "--database-url", url, "--json").stdout)
    assert [v["version"] for v in listing][-1] == "cli-1"
