"""Interoperability: a Node.js client (@grpc/grpc-js + @grpc/proto-loader, only protos/) and buf lint.

Both need Node.js and the npm packages in tests/interop/node, installed as .ci/run does (NPM_INSTALL
below: `npm install --no-save` rather than `npm ci`, since the lock may lack another platform's buf
package). On a laptop without them the tests skip and say exactly what to run; in CI (CI=true) a
missing toolchain fails instead.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest

from ecert.v1 import transmission_pb2 as tpb
from tests.factories import certificate, envelope

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "interop" / "node"
BUF = NODE_DIR / "node_modules" / ".bin" / "buf"
NPM_INSTALL = "(cd tests/interop/node && npm install --no-audit --no-fund --no-save)"
NODE_MISSING = f"node is not installed: install Node.js 18 or later with npm (Debian: apt-get install nodejs npm), then run {NPM_INSTALL} from the repository root"


def _need(ok: bool, why: str) -> None:
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the interoperability tests: {why}")
    pytest.skip(why)


@pytest.fixture
def node() -> str:
    path = shutil.which("node")
    _need(path is not None, NODE_MISSING)
    _need((NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir(), f"the npm packages are not installed: run {NPM_INSTALL} from the repository root")
    return str(path)


@pytest.fixture
def database_url() -> str:
    """The wire format is what these tests check, not storage: SQLite only."""
    return ""


def test_node_client_reads_answers_and_error_details(node, server, transmission, partner):
    for n in (1, 2):
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(
            envelope=envelope(partner.signer, certificate(f"MX26-{n:08d}"), message_id=f"m-{n}")))
    done = subprocess.run([node, str(NODE_DIR / "interop.mjs"), f"127.0.0.1:{server.port}"],
                          capture_output=True, text=True, timeout=120, cwd=NODE_DIR)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)

    got = r["get_existing"]["value"]["certificate"]
    assert got["certificate"]["certificate_number"] == "MX26-00000001" and got["status"] == "CERTIFICATE_STATUS_ACTIVE"
    assert got["remaining_quantity"] == "1200" and got["version"] == 1 and len(got["digest_sha256"]) == 64

    missing = r["get_missing"]["error"]
    assert (missing["code"], missing["reason"], missing["domain"]) == ("NOT_FOUND", "CERTIFICATE_NOT_FOUND", "ecert")
    assert missing["status_code"] == 5

    blank = r["get_blank"]["error"]
    assert blank["code"] == "INVALID_ARGUMENT"
    assert {(v["field"], v["reason"]) for v in blank["field_violations"]} == {
        ("issuing_country", "FIELD_REQUIRED"), ("certificate_number", "FIELD_REQUIRED")}

    first, second = r["list_first_page"]["value"], r["list_second_page"]["value"]
    assert [c["certificate"]["certificate_number"] for c in first["certificates"] + second["certificates"]] == ["MX26-00000001", "MX26-00000002"]
    assert first["next_page_token"] and not second["next_page_token"]
    assert [e["condition"] for e in r["activity_unmatched"]["value"]["entries"]] == ["CERTIFICATE_CONDITION_UNMATCHED"] * 2

    unsigned = r["submit_unsigned"]["error"]
    assert (unsigned["code"], unsigned["reason"]) == ("INVALID_ARGUMENT", "SIGNATURE_MISSING")
    assert unsigned["receipt"]["outcome"] == "TRANSMISSION_OUTCOME_REJECTED" and unsigned["receipt"]["signature_bytes"] == 64

    quotas = r["list_quotas"]
    if quotas["ok"]:
        assert {q["tpl_number"] for q in quotas["value"]["quotas"]} >= {"9823.53.01", "9823.53.06"}
    else:  # QuotaService not served by this build: the answer is still a proper status
        assert quotas["error"]["code"] == "UNIMPLEMENTED"


def test_buf_lint_passes_on_protos():
    _need(BUF.exists(), f"buf is not installed: run {NPM_INSTALL} from the repository root (it installs @bufbuild/buf)")
    done = subprocess.run([str(BUF), "lint"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
