"""`ecert claim ...`, `ecert certificate usage` and `ecert quota status` as subprocesses against a real server."""
from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest
from google.protobuf import json_format

from contract.entry_number import make_entry_number
from ecert.v1 import transmission_pb2 as tpb
from tests.cli.conftest import ECERT, ROOT, write_json
from tests.factories import claim_line, envelope, small_levels


def line_dict(transaction: int = 1, **changes: object) -> dict:  # type: ignore[type-arg]
    """A line presented now (these servers run on the system clock), after its certificate was sent."""
    now = dt.datetime.now(dt.timezone.utc)
    times: dict[str, object] = dict(filed_at=now - dt.timedelta(hours=2), arrived_at=now - dt.timedelta(hours=1), paid_at=now)
    return json_format.MessageToDict(claim_line(transaction, **{**times, **changes}), preserving_proto_field_name=True)


@pytest.fixture
def on_file(server, transmission, partner):  # type: ignore[no-untyped-def]
    """TPL 1 limited to 1000 SME; the default certificate (1200 dozen, TPL 1) on file."""
    server.use_cases.references.load(small_levels("cli-test", {"9823.53.01": "1000"}))
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, sent_at=dt.datetime.now(dt.timezone.utc))))


def test_claim_file_check_get_usage_reverse(ecert, on_file, tmp_path):
    entry = make_entry_number("B76", 1)
    one = write_json(tmp_path / "line.json", line_dict())
    checked = ecert("claim", "check", str(one), "--json")
    assert checked.code == 0 and checked.json()[0]["decision"] == "PREFERENTIAL"

    filed = ecert("claim", "file", str(one))
    assert filed.code == 0, filed.stderr
    assert entry in filed.stdout and "PREFERENTIAL" in filed.stdout and "600 SME" in filed.stdout
    again = ecert("claim", "file", str(one), "--json")
    assert again.json()[0]["replayed"] is True

    got = ecert("claim", "get", entry, "1", "--json").json()
    assert (got["granted_quantity"], got["level_remaining"], got["reversed"]) == ("100", "400", False)
    usage = ecert("certificate", "usage", "MX", "MX26-00000001")
    assert usage.code == 0 and "used 100, remaining 1100" in usage.stdout and entry in usage.stdout

    corrected = write_json(tmp_path / "corrected.json", line_dict(quantity="40"))
    reversed_ = ecert("claim", "reverse", entry, "1", "--corrected", str(corrected), "--reason", "quantity corrected", "--json").json()
    assert reversed_["reversed"]["reversed"] is True and reversed_["corrected"]["granted_quantity"] == "40"
    assert ecert("claim", "reverse", entry, "1").code == 0  # the corrected line, canceled now


def test_a_batch_of_lines_and_a_mismatch(ecert, on_file, tmp_path):
    batch = write_json(tmp_path / "lines.json", [line_dict(1), line_dict(2, unit="KG"), line_dict(3, certificate_number="MX26-99999999")])
    result = ecert("claim", "file", str(batch), "--json")
    assert result.code == 0
    decisions = [(r["result"]["decision"], r["result"]["reasons"]) for r in result.json()]
    assert decisions == [("PREFERENTIAL", []), ("MFN_REQUIRED", ["DATA_MISMATCH"]), ("MFN_REQUIRED", ["NO_TRANSMISSION"])]
    table = ecert("claim", "check", str(write_json(tmp_path / "kg.json", line_dict(4, unit="KG"))))
    assert table.code == 0 and "unit: KG vs DOZ" in table.stdout


def test_claim_errors(ecert, on_file, tmp_path):
    bad_digit = write_json(tmp_path / "bad.json", line_dict(entry_number="B76-0000001-0"))
    result = ecert("claim", "file", str(bad_digit))
    assert result.code == 1 and "INVALID_ARGUMENT" in result.stderr
    assert "ENTRY_NUMBER_CHECK_DIGIT" in result.stderr and "Traceback" not in result.stderr
    missing = ecert("claim", "get", make_entry_number("B76", 9), "1")
    assert missing.code == 1 and "NOT_FOUND" in missing.stderr
    unknown_field = write_json(tmp_path / "odd.json", {**line_dict(), "colour": "red"})
    assert ecert("claim", "file", str(unknown_field)).code == 2
    assert ecert("claim", "file", str(write_json(tmp_path / "empty.json", []))).code == 2
    assert ecert("claim", "reverse", make_entry_number("B76", 1), "1", "--corrected", str(tmp_path / "nope.json")).code == 2
    assert ecert("claim", "get", "x", "notanumber").code == 2


def test_quota_status_table_json_and_errors(ecert, on_file, tmp_path):
    before = ecert("quota", "status", "--json").json()
    assert {q["label"]: q["charged"] for q in before}["TPL 1"] == "0"
    assert ecert("claim", "file", str(write_json(tmp_path / "l.json", line_dict(quantity="150")))).code == 0
    table = ecert("quota", "status")
    assert table.code == 0
    row = next(r for r in table.stdout.splitlines() if "9823.53.01" in r)
    assert "90.00" in row and "critical" in row and "█" * 18 in row
    one = ecert("quota", "status", "--tpl", "9823.53.01", "--json").json()
    assert [(q["tpl_number"], q["charged"], q["state"]) for q in one] == [("9823.53.01", "900", "CRITICAL")]
    assert ecert("quota", "status", "--tpl", "9823.99.99").code == 1
    assert ecert("quota", "status", "--as-of", "yesterday-ish").code == 2
    future = ecert("quota", "status", "--as-of", "2999-01-01T00:00:00Z")
    assert future.code == 1 and "AS_OF_IN_FUTURE" in future.stderr
    assert ecert("quota", "status", "--watch", "--as-of", "2026-01-01T00:00:00Z").code == 2


def test_quota_watch_streams_events_as_json_lines(cli_env, on_file, tmp_path, ecert):
    process = subprocess.Popen([*ECERT, "quota", "status", "--watch", "--json", "--tpl", "9823.53.01", "--max-events", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env, cwd=ROOT)
    try:
        snapshot = json.loads(process.stdout.readline())  # type: ignore[union-attr]
        assert snapshot["kind"] == "SNAPSHOT" and snapshot["status"]["charged"] == "0"
        assert ecert("claim", "file", str(write_json(tmp_path / "l.json", line_dict(quantity="150")))).code == 0
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    change = json.loads(out.splitlines()[0])
    assert change["kind"] == "BECAME_CRITICAL" and change["status"]["charged"] == "900", err
    assert process.returncode == 0


def test_answer_offer_without_an_offer_says_why(ecert, on_file, tmp_path):
    line = write_json(tmp_path / "plain.json", line_dict(9))
    assert ecert("claim", "file", str(line)).code == 0
    refused = ecert("claim", "answer-offer", make_entry_number("B76", 9), "1", "5")
    assert refused.code == 1 and "NO_OFFER" in refused.stderr, refused.stderr
    missing = ecert("claim", "answer-offer", make_entry_number("B76", 8), "1", "5")
    assert missing.code == 1 and "CLAIM_NOT_FOUND" in missing.stderr, missing.stderr
