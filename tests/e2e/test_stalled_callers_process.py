"""Issue 15, item 1, against a real `ecert serve` process (mutual TLS from the project's PKI): callers
that open calls and never send their request starve nobody. The in-process variants, one per limit,
are in tests/integration/test_hostile_callers.py; this one checks the deployed command line wires them.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import grpc

from tests.integration.test_hostile_callers import Stalls, claim_served_quickly, finished, refusal, served_quickly
from tests.processes import ROOT
from tests.tls_fixtures import DevPki, pki  # noqa: F401  (fixture)

SERVING = re.compile(r"ecert serving on \S+:(\d+)")


def test_stalled_calls_starve_nobody_in_a_served_process(pki: DevPki, tmp_path):  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECERT_")}
    env.update(
        ECERT_DATA_DIR=str(tmp_path / "service"), ECERT_TRUST_STORE=str(pki.layout.trust_store),
        ECERT_RECEIPT_KEY=str(pki.layout.receipt_key), ECERT_WORKERS="4", ECERT_RESERVED_WORKERS="1",
        ECERT_CALLS_PER_IDENTITY="8", ECERT_MAX_CONCURRENT_RPCS="64", ECERT_RESERVED_CALLS="8", ECERT_REQUEST_ARRIVAL_MS="60000",
    )
    log = tmp_path / "service.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "client.cli", "serve", "--tls-dir", str(pki.dir("service")), "--host", "127.0.0.1", "--port", "0"],
            env=env, cwd=ROOT, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
        )
    attack = None
    try:
        deadline = time.monotonic() + 60
        while not (found := SERVING.findall(log.read_text(errors="replace"))):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        port = int(found[-1])
        attack = Stalls(pki, port)
        refused = attack.open("no-role", 40)  # ten times the workers: refused before their request
        held = attack.open("importer", 12)  # eight admitted (twice the workers), waiting for their request
        for call in finished(refused, len(refused)):
            assert refusal(call)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_MISSING")
        over = finished(held, 4)
        assert all(refusal(call)[1] == "TOO_MANY_CALLS_FOR_CALLER" for call in over)
        time.sleep(0.5)
        assert sum(call.done() for call in held) == 4
        served_quickly(pki, port, "admin")
        claim_served_quickly(pki, port)
        served_quickly(pki, port, "importer-other")
    finally:
        if attack is not None:
            attack.close()
        process.terminate()
        process.wait(30)
