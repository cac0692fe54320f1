"""`ecert serve` refuses to start in ways that would fail later and silently: a missing receipt-signing
key, plaintext on a non-loopback host, a port another server holds. Each refusal is one line and exit 2."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from server.adapters.keystore import LogKeyMissing, ReceiptKeyMissing, load_or_create_log_key, load_or_create_signer
from server.app import ListenError, create_server
from server.config import Settings, is_loopback


def serve(tmp_path: pathlib.Path, *arguments: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """`ecert serve` that is expected to exit by itself (a refusal)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ECERT_")}
    return subprocess.run(
        [sys.executable, "-m", "client.cli", "serve", "--data-dir", str(tmp_path / "data"), *arguments],
        capture_output=True, text=True, timeout=timeout, env={**clean, "ECERT_LOG_FORMAT": "text", **env},
    )


def refusal(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0]), done.stderr
    return errors[0]


# -- the receipt-signing key --------------------------------------------------------------------------


def test_a_missing_receipt_key_refuses_to_start(tmp_path):
    line = refusal(serve(tmp_path, "--insecure", "--port", "0"))
    assert re.fullmatch(r"error: the receipt-signing key \S+receipt-signing\.pem does not exist; .*--create-receipt-key.*", line)
    assert not (tmp_path / "data").exists()  # nothing made: no key, no database

    configured = tmp_path / "secrets" / "receipt.pem"  # a mis-mounted secret
    line = refusal(serve(tmp_path, "--insecure", "--port", "0", ECERT_RECEIPT_KEY=str(configured)))
    assert str(configured) in line and not configured.exists()


def test_create_server_refuses_a_missing_key_unless_asked(tmp_path):
    settings = Settings(data_dir=tmp_path, database_url="", port=0, trust_store="", receipt_key="", create_missing_receipt_key=False)
    with pytest.raises(ReceiptKeyMissing):
        create_server(settings, address="127.0.0.1:0")
    assert not settings.resolved_receipt_key().exists()
    load_or_create_signer(settings.resolved_receipt_key(), settings.receipt_key_id)  # made on purpose
    # The log-signing key likewise: a replica that made its own would sign checkpoints nobody can verify.
    with pytest.raises(LogKeyMissing):
        create_server(settings, address="127.0.0.1:0")
    assert not settings.resolved_log_key().exists()
    load_or_create_log_key(settings.resolved_log_key())
    create_server(settings, address="127.0.0.1:0").stop(0)


# -- plaintext only on loopback -----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "ecert.example"])
def test_insecure_on_a_host_that_is_not_loopback_is_refused(tmp_path, host):
    line = refusal(serve(tmp_path, "--insecure", "--create-receipt-key", "--host", host, "--port", "0"))
    assert "--allow-insecure-remote" in line and host in line


def test_loopback_names():
    assert all(map(is_loopback, ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LOCALHOST"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "localhost.example", "", "127.0.0.1.nip.io"]))


def test_insecure_on_all_interfaces_needs_the_second_flag(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ECERT_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "client.cli", "serve", "--data-dir", str(tmp_path / "data"), "--insecure",
         "--allow-insecure-remote", "--create-receipt-key", "--host", "0.0.0.0", "--port", "0"],
        stderr=subprocess.PIPE, text=True, env={**clean, "ECERT_LOG_FORMAT": "text"},
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "ecert serving on" in line:
                assert line.startswith("ecert serving on 0.0.0.0:")
                break
        else:
            raise AssertionError("the server did not start")
    finally:
        process.terminate()
        process.wait(timeout=30)


# -- one server per port ------------------------------------------------------------------------------


def test_a_second_server_on_a_port_in_use_is_refused(tmp_path):
    first = create_server(Settings(data_dir=tmp_path / "first", database_url="", trust_store="", receipt_key=""), address="127.0.0.1:0")
    try:
        second = Settings(data_dir=tmp_path / "second", database_url="", trust_store="", receipt_key="")
        with pytest.raises(ListenError):
            create_server(second, address=f"127.0.0.1:{first.port}")
        line = refusal(serve(tmp_path, "--insecure", "--create-receipt-key", "--port", str(first.port)))
        assert line == f"error: cannot listen on 127.0.0.1:{first.port}: the address is in use or not available here"
    finally:
        first.stop(0)
