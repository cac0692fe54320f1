"""`ecert submit` and `ecert certificate ...` as subprocesses against a real server."""
from __future__ import annotations

import csv
import re

from client.sdk import Receipt
from tests.cli.conftest import certificate_dict, write_json


def test_submit_json_prints_receipts_and_summary_and_saves_verifiable_receipts(ecert, key_file, tmp_path, settings):
    batch = write_json(tmp_path / "batch.json", [certificate_dict(f"MX26-{n:08d}") for n in range(3)])
    receipts = tmp_path / "receipts"
    result = ecert("submit", str(batch), "--key-file", str(key_file), "--receipts-dir", str(receipts))
    assert result.code == 0, result.stderr
    assert "3 transmitted: 3 accepted" in result.stdout
    assert "MX26-00000002" in result.stdout
    saved = sorted(receipts.glob("*.json"))
    assert len(saved) == 3
    public_key = str(settings.resolved_receipt_key()) + ".pub"
    verified = ecert("receipt", "verify", str(saved[0]), "--public-key", public_key)
    assert verified.code == 0 and "VALID receipt" in verified.stdout


def test_submit_csv_with_a_bad_row_reports_it_and_exits_1(ecert, key_file, tmp_path):
    rows = [certificate_dict("MX26-00000001"), certificate_dict("MX26-00000002", htsus_number="61091")]
    path = tmp_path / "batch.csv"
    flat = []
    for row in rows:
        for party in ("exporter", "producer"):
            for key, value in row.pop(party).items():
                row[f"{party}_{key}"] = value
        flat.append(row)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    result = ecert("submit", str(path), "--key-file", str(key_file), "--json")
    assert result.code == 1
    first, second = result.json()
    assert first["outcome"] == "ACCEPTED" and first["version"] == 1
    assert second["outcome"] == "REJECTED" and second["reason"] == "HTSUS_NUMBER_MALFORMED"
    assert second["field_violations"] == [
        {"field": "envelope.certificate.htsus_number", "reason": "HTSUS_NUMBER_MALFORMED", "description": second["field_violations"][0]["description"]}
    ]
    assert Receipt  # rejected rows still carry customs' signed receipt
    assert second["receipt"]["outcome"] == "TRANSMISSION_OUTCOME_REJECTED"  # as customs signed it


def test_submit_replace_and_cancel_items_and_a_long_batch_with_progress(ecert, key_file, tmp_path):
    many = [certificate_dict(f"MX26-{n:08d}") for n in range(12)]
    assert ecert("submit", str(write_json(tmp_path / "many.json", {"certificates": many})), "--key-file", str(key_file)).code == 0
    changes = [
        {"certificate": certificate_dict("MX26-00000000", quantity="10"), "action": "replace", "replaces_version": 1},
        {"certificate": {"certificate_number": "MX26-00000001", "issuing_country": "MX"}, "action": "cancel", "replaces_version": 1},
        {"certificate": certificate_dict("MX26-00000002", quantity="5"), "action": "replace", "replaces_version": 7},
    ]
    result = ecert("submit", str(write_json(tmp_path / "changes.json", changes)), "--key-file", str(key_file))
    assert result.code == 1
    assert "STALE_VERSION" in result.stdout and "3 transmitted: 2 accepted, 1 rejected" in result.stdout


def test_submit_bad_input_exits_2_without_traceback(ecert, key_file, tmp_path):
    cases = [
        (write_json(tmp_path / "a.json", {"nope": 1}), "expected a list"),
        (write_json(tmp_path / "b.json", [{"certificate_number": "X", "colour": "red"}]), "item 1"),
        (write_json(tmp_path / "c.json", [{"certificate": {}, "action": "obliterate"}]), "unknown action"),
        (tmp_path / "missing.json", "No such file"),
    ]
    (tmp_path / "d.json").write_text("{not json")
    cases.append((tmp_path / "d.json", "not valid JSON"))
    for path, message in cases:
        result = ecert("submit", str(path), "--key-file", str(key_file))
        assert result.code == 2, (path, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
    lone_key = tmp_path / "lone.pem"
    lone_key.write_bytes(key_file.read_bytes())
    result = ecert("submit", str(cases[0][0]), "--key-file", str(lone_key))
    assert result.code == 2


def test_submit_with_a_key_customs_does_not_know_is_refused(ecert, key_file, tmp_path):
    batch = write_json(tmp_path / "one.json", [certificate_dict()])
    result = ecert("submit", str(batch), "--key-file", str(key_file), "--key-id", "mx-stolen-1")
    assert result.code == 1 and "SIGNING_KEY_UNKNOWN" in result.stdout


def test_unreachable_service_exits_3(ecert, key_file, tmp_path):
    batch = write_json(tmp_path / "one.json", [certificate_dict()])
    result = ecert("submit", str(batch), "--key-file", str(key_file), "--target", "127.0.0.1:1", "--timeout", "2")
    assert result.code == 3 and "UNAVAILABLE" in result.stderr and "Traceback" not in result.stderr


def test_certificate_get_list_report(ecert, key_file, tmp_path):
    batch = [certificate_dict(f"MX26-{n:08d}", tpl_number="9823.53.02" if n % 2 else "9823.53.01") for n in range(4)]
    assert ecert("submit", str(write_json(tmp_path / "b.json", batch)), "--key-file", str(key_file)).code == 0
    cancel = [{"certificate": {"certificate_number": "MX26-00000003", "issuing_country": "MX"}, "action": "CANCEL", "replaces_version": 1}]
    assert ecert("submit", str(write_json(tmp_path / "c.json", cancel)), "--key-file", str(key_file)).code == 0

    got = ecert("certificate", "get", "MX", "MX26-00000001", "--json")
    assert got.code == 0
    data = got.json()
    assert data["certificate"]["certificate_number"] == "MX26-00000001" and data["status"] == "ACTIVE"
    assert data["remaining_quantity"] == "1200" and data["version"] == 1
    table = ecert("certificate", "get", "MX", "MX26-00000003")
    assert table.code == 0 and "CANCELED" in table.stdout and "Men's knit cotton T-shirts" in table.stdout

    listed = ecert("certificate", "list", "MX", "--tpl", "9823.53.02", "--json")
    assert [c["certificate"]["certificate_number"] for c in listed.json()] == ["MX26-00000001", "MX26-00000003"]
    active = ecert("certificate", "list", "MX", "--status", "active")
    assert active.code == 0 and "3 certificate(s)" in active.stdout

    report = ecert("certificate", "report", "MX", "--condition", "canceled", "--json")
    assert [(e["certificate_number"], e["condition"]) for e in report.json()] == [("MX26-00000003", "CANCELED")]
    unmatched = ecert("certificate", "report", "MX", "--condition", "unmatched")
    assert unmatched.code == 0 and "(11)" in unmatched.stdout and "3 certificate(s)" in unmatched.stdout


def test_certificate_read_errors(ecert):
    missing = ecert("certificate", "get", "MX", "MX26-99999999")
    assert missing.code == 1
    assert "NOT_FOUND CERTIFICATE_NOT_FOUND" in missing.stderr and "Traceback" not in missing.stderr
    assert re.search(r"request id [0-9a-f]{32}", missing.stderr)
    blank = ecert("certificate", "get", "", "")
    assert blank.code == 1
    assert "issuing_country: FIELD_REQUIRED" in blank.stderr and "certificate_number: FIELD_REQUIRED" in blank.stderr
    assert ecert("certificate", "list", "MX", "--status", "sleeping").code == 2
    bad = ecert("certificate", "report", "MX", "--condition", "lost")
    assert bad.code == 2 and "matched, unmatched, canceled" in bad.stderr
    assert ecert("certificate", "get", "MX", "X", "--version", "-1").code == 2  # typer's own range check
