"""What the CLI prints for a user to feed back into it: `ecert claim example` into `ecert claim check`,
`ecert submit --json` into `ecert receipt verify`; each against a real server on a real port."""
from __future__ import annotations

import datetime as dt
import json
import time

from ecert.v1 import transmission_pb2 as tpb
from tests.cli.conftest import certificate_dict, write_json
from tests.factories import certificate, envelope


def test_claim_example_is_a_line_the_service_decides(ecert, transmission, partner, tmp_path):
    # The example is presented when it is printed: before Mexico transmitted its certificate, it is a
    # decision (no preference), not a refusal of the line.
    early = ecert("claim", "example")
    assert early.code == 0, early.stderr
    early_path = tmp_path / "early.json"
    early_path.write_text(early.stdout, encoding="utf-8")
    before = ecert("claim", "check", str(early_path), "--json")
    assert before.code == 0, before.stderr
    assert (before.json()[0]["decision"], before.json()[0]["reasons"]) == ("MFN_REQUIRED", ["NO_TRANSMISSION"])

    number = early.json()["certificate_number"]
    time.sleep(1.1)  # the transmission is received after the early line's (whole-second) presentation
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(
        envelope=envelope(partner.signer, certificate(number), message_id="example-1", sent_at=dt.datetime.now(dt.timezone.utc))))
    # A transmission received after the line was presented does not count for it (eCERT notice: on file
    # upon entry summary) ...
    late = ecert("claim", "check", str(early_path), "--json").json()[0]
    assert (late["decision"], late["reasons"]) == ("MFN_REQUIRED", ["NO_TRANSMISSION", "TRANSMITTED_AFTER_PRESENTATION"])
    # ... and a line presented after it is granted.
    time.sleep(1.1)
    example = ecert("claim", "example")
    line = example.json()
    path = tmp_path / "line.json"
    path.write_text(example.stdout, encoding="utf-8")
    checked = ecert("claim", "check", str(path), "--json")
    assert checked.code == 0, checked.stderr
    result = checked.json()[0]
    assert (result["decision"], result["granted_quantity"], result["entry_number"]) == ("PREFERENTIAL", "100", line["entry_number"])

    # filer_code is the one optional field; without it the line is decided the same way.
    optional = write_json(tmp_path / "no-filer.json", {k: v for k, v in line.items() if k != "filer_code"})
    assert ecert("claim", "check", str(optional), "--json").json()[0]["decision"] == "PREFERENTIAL"


def test_claim_example_without_a_required_field_is_refused(ecert, tmp_path):
    line = ecert("claim", "example").json()
    for field in ("paid_at", "entry_type", "spi"):
        path = write_json(tmp_path / f"without-{field}.json", {k: v for k, v in line.items() if k != field})
        refused = ecert("claim", "check", str(path))
        assert refused.code == 1, refused.stdout
        assert "FIELD_REQUIRED" in refused.stderr and f"line.{field}" in refused.stderr, refused.stderr


def test_receipt_verify_reads_what_submit_json_prints(ecert, settings, key_file, tmp_path):
    public_key = str(settings.resolved_receipt_key()) + ".pub"
    batch = write_json(tmp_path / "batch.json", [certificate_dict("MX26-00000001"),
                                                 certificate_dict("MX26-00000002", htsus_number="61")])
    submitted = ecert("submit", str(batch), "--key-file", str(key_file), "--json")
    assert submitted.code == 1, submitted.stderr  # the second row is refused, with customs' signed rejection
    assert [row["outcome"] for row in submitted.json()] == ["ACCEPTED", "REJECTED"]
    output = tmp_path / "submitted.json"
    output.write_text(submitted.stdout, encoding="utf-8")

    whole = ecert("receipt", "verify", str(output), "--public-key", public_key)
    assert whole.code == 0, whole.stderr
    assert whole.stdout.count("VALID receipt") == 2 and "ACCEPTED" in whole.stdout and "REJECTED" in whole.stdout
    piped = ecert("receipt", "verify", "-", "--public-key", public_key, stdin=submitted.stdout)
    assert piped.code == 0 and piped.stdout == whole.stdout
    row = write_json(tmp_path / "row.json", submitted.json()[0])
    assert ecert("receipt", "verify", str(row), "--public-key", public_key).stdout.count("VALID receipt") == 1
    receipt_only = write_json(tmp_path / "receipt.json", submitted.json()[1]["receipt"])
    assert ecert("receipt", "verify", str(receipt_only), "--public-key", public_key).code == 0

    # The same output with one receipt changed: the verifier says no, naming it.
    rows = submitted.json()
    rows[1]["receipt"]["outcome"] = "TRANSMISSION_OUTCOME_ACCEPTED"
    tampered = write_json(tmp_path / "tampered.json", rows)
    refused = ecert("receipt", "verify", str(tampered), "--public-key", public_key)
    assert refused.code == 1 and refused.stdout.count("VALID receipt") == 1
    assert refused.stderr.startswith(f"INVALID: receipt {rows[1]['receipt_id']}")

    # A row refused before customs judged anything has no receipt: named, not counted as checked.
    rows = submitted.json()
    rows[0]["receipt"] = None
    partial = write_json(tmp_path / "partial.json", rows)
    result = ecert("receipt", "verify", str(partial), "--public-key", public_key)
    assert result.code == 0 and "row 1: no receipt" in result.stdout and result.stdout.count("VALID receipt") == 1
    nothing = write_json(tmp_path / "nothing.json", [{"row": 1, "receipt": None}])
    assert ecert("receipt", "verify", str(nothing), "--public-key", public_key).code == 2
    assert ecert("receipt", "verify", str(write_json(tmp_path / "list.json", [1])), "--public-key", public_key).code == 2
    assert json.loads(output.read_text())[0]["receipt"]["receiptId"] == rows[0]["receipt_id"]
