"""docs/operations.md's "Revoking a certificate or key", as written, against a running `ecert serve`; and a
revocation list that cannot be used stops `ecert serve` and `ecert relay` with one line (exit 2)."""
from __future__ import annotations

import datetime as dt
import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.pki import PkiLayout, load_authority, write_crl
from client.tls import channel_credentials
from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import transmission_pb2_grpc
from tests.factories import envelope
from tests.grpc_errors import rich_error
from tests.operators.conftest import ROOT, clean_env, ecert


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def documented_block() -> str:
    docs = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = docs[docs.index("## Revoking a certificate or key"):]
    return re.search(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M).group(1)  # type: ignore[union-attr]


def health(port: int, tls_dir: pathlib.Path) -> str:
    with grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(tls_dir)) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            return "SERVING"
        except grpc.RpcError as error:
            return rich_error(error).reason or error.code().name


def test_the_documented_revocation_runs_against_a_running_service(tmp_path, serve):
    assert ecert("pki", "init", "pki", cwd=tmp_path).code == 0
    layout = PkiLayout(tmp_path / "pki")
    serving = serve("--port", "0", "--tls-dir", "pki/service", "--trust-store", "pki/service/partner-keys.json",
                    "--receipt-key", "pki/service/receipt-signing.pem")
    port = serving.port
    assert health(port, layout.party("relay")) == "SERVING"

    env = clean_env(PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", documented_block()], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (layout.party("relay") / "crl.pem").read_bytes() == (layout.party("service") / "crl.pem").read_bytes()

    serving.wait_for(r"revocation list pki/service/crl\.pem reloaded: 1 revoked certificates")
    serving.wait_for(r"trust store pki/service/partner-keys\.json reloaded: 1 keys, 1 revoked")
    assert eventually(lambda: health(port, layout.party("relay")) == "CERTIFICATE_REVOKED")
    assert health(port, layout.party("customs")) == "SERVING"
    checked = ecert("health", "--target", f"127.0.0.1:{port}", "--tls-dir", "pki/relay", cwd=tmp_path)
    assert checked.code == 1 and "CERTIFICATE_REVOKED" in checked.stderr, checked

    signed = envelope(layout.document_signer(), sent_at=dt.datetime.now(dt.timezone.utc))
    with grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(layout.party("gateway-mx"))) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            transmission_pb2_grpc.TransmissionServiceStub(channel).SubmitCertificate(
                tpb.SubmitCertificateRequest(envelope=signed), timeout=10)
    error = rich_error(caught.value)
    assert error.reason == "SIGNING_KEY_REVOKED" and error.receipt is not None
    assert error.receipt.outcome == tpb.TRANSMISSION_OUTCOME_REJECTED
    assert serving.stop() == 0


@pytest.mark.parametrize("how", ["flag", "variable", "config"])
def test_a_revocation_list_that_cannot_be_used_stops_the_start_with_one_line(tmp_path, how):
    assert ecert("pki", "init", "pki", cwd=tmp_path).code == 0
    crl = tmp_path / "crl.pem"
    write_crl(load_authority(tmp_path / "pki" / "ca"), crl, now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3), days=1)
    args = ["serve", "--port", "0", "--tls-dir", "pki/service", "--create-receipt-key"]
    env = clean_env()
    if how == "flag":
        args += ["--revocation-list", str(crl)]
    elif how == "variable":
        env["ECERT_REVOCATION_LIST"] = str(crl)
    else:
        (tmp_path / "ecert.toml").write_text(f'revocation_list = "{crl}"\n')
        args += ["--config", str(tmp_path / "ecert.toml")]
    done = ecert(*args, cwd=tmp_path, env=env)
    assert done.code == 2
    assert done.error_lines == [f"error: revocation list {crl}: expired at {_next_update(crl)} (its nextUpdate)"], done.stderr


def test_the_relay_refuses_to_start_with_a_missing_named_revocation_list(tmp_path):
    assert ecert("pki", "init", "pki", cwd=tmp_path).code == 0
    done = ecert("relay", "--port", "0", "--tls-dir", "pki/relay", "--revocation-list", "nowhere/crl.pem", cwd=tmp_path)
    assert done.code == 2 and done.error_lines == ["error: revocation list nowhere/crl.pem: No such file or directory"], done.stderr


def _next_update(path: pathlib.Path) -> str:
    from cryptography import x509

    next_update = x509.load_pem_x509_crl(path.read_bytes()).next_update_utc
    assert next_update is not None
    return next_update.isoformat()
