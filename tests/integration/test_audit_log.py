"""The audit chain: every decision, charge, reversal and reference change; tampering is found."""
from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy import text

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from server.service.audit import verify_audit_log
from tests.factories import claim_line, envelope, small_levels


def ecert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli", *args], capture_output=True, text=True, timeout=60)


def test_decisions_reversals_and_reference_changes_are_chained(match, transmission, partner, server, settings):
    server.use_cases.references.load(small_levels("audit-1", {"9823.53.01": "1000"}))
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer)))
    first = match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(1))).result
    match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(2, unit="KG")))
    match.ReverseClaim(mpb.ReverseClaimRequest(entry_number=first.entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CANCELED))
    with server.database.read_engine.connect() as connection:
        kinds = [row[0] for row in connection.execute(text("SELECT kind FROM audit_log ORDER BY seq"))]
        payload = json.loads(connection.execute(text("SELECT payload FROM audit_log WHERE kind = 'DECISION' ORDER BY seq")).first()[0])
    # Two packaged defaults and the test table, two decisions, one reversal.
    assert kinds == ["REFERENCE_DATA", "REFERENCE_DATA", "REFERENCE_DATA", "DECISION", "DECISION", "REVERSAL"]
    assert payload["decision"] == "PREFERENTIAL" and payload["factor"] == "6.0@sme-statistical-lines-2026.1"
    result = verify_audit_log(server.database)
    assert result.intact and result.records == 6

    url = settings.resolved_database_url()
    verified = ecert("audit", "verify", "--database-url", url)
    assert verified.returncode == 0 and "6 records verified" in verified.stdout


def test_tampering_is_reported_at_the_first_broken_record(match, transmission, partner, server, settings):
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer)))
    for n in range(1, 4):
        match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(n)))
    with server.database.write_engine.begin() as connection:
        # Someone rewrites history: the second decision now says MFN.
        row = connection.execute(text("SELECT seq, payload FROM audit_log WHERE kind = 'DECISION' ORDER BY seq")).fetchall()[1]
        connection.execute(text("UPDATE audit_log SET payload = :p WHERE seq = :s"), {"p": row[1].replace("PREFERENTIAL", "MFN_REQUIRED"), "s": row[0]})
    broken = ecert("audit", "verify", "--database-url", settings.resolved_database_url(), "--json")
    assert broken.returncode == 1
    assert json.loads(broken.stdout) == {"records": row[0], "intact": False, "first_broken": row[0]}


def test_removing_the_last_record_is_reported(match, transmission, partner, server):
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer)))
    match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(1)))
    with server.database.write_engine.begin() as connection:
        last = connection.execute(text("SELECT max(seq) FROM audit_log")).scalar_one()
        connection.execute(text("DELETE FROM audit_log WHERE seq = :s"), {"s": last})
    result = verify_audit_log(server.database)
    assert not result.intact and result.first_broken == last


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
