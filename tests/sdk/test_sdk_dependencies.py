"""A partner installs the SDK without the server: importing it and the wire contract needs none of the
server's dependencies (SQLAlchemy, Alembic) and loads no server module.

Each check runs in a fresh interpreter where `import sqlalchemy` and `import alembic` fail (a None entry in
sys.modules makes an import raise ImportError), so that the test process's own imports cannot hide one.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

WITHOUT_SERVER_DEPENDENCIES = """
import sys
sys.modules["sqlalchemy"] = None
sys.modules["alembic"] = None
"""

CONTRACT_AND_SDK = WITHOUT_SERVER_DEPENDENCIES + """
import importlib, json, pathlib, pkgutil
import contract
contract_modules = sorted(m.name for m in pkgutil.iter_modules(contract.__path__, "contract."))
for name in contract_modules:
    importlib.import_module(name)
import client.sdk
from client.sdk import (
    CustomsClient, ImporterClient, LogClient, OperatorClient, PartnerClient, RelayClient, WitnessLogClient,
    load_document_signer,
)
for name in client.sdk.__all__:
    getattr(client.sdk, name)
print(json.dumps({
    "contract": contract_modules,
    "server": sorted(m for m in sys.modules if m == "server" or m.startswith("server.")),
    "blocked": [m for m in ("sqlalchemy", "alembic") if sys.modules.get(m) is not None],
}))
"""

# What a partner does with the SDK and the contract alone: seal an envelope and check it, offline.
SEAL_AND_CHECK = WITHOUT_SERVER_DEPENDENCIES + """
import datetime as dt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from client.sdk import Certificate, PartnerClient
from contract.envelope import digest, signature_ok
from contract.signing import Signer

signer = Signer("mx-test-1", Ed25519PrivateKey.generate())
partner = PartnerClient(signer, sender="MX", target="127.0.0.1:9", insecure=True)
sealed = partner.seal(Certificate(certificate_number="MX26-1", issuing_country="MX"),
                      sent_at=dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc))
assert signature_ok(sealed, signer.public_key) and len(digest(sealed)) == 32
sealed.certificate.quantity = "1"
assert not signature_ok(sealed, signer.public_key)
print("sealed and checked")
"""


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_sdk_and_the_contract_import_without_sqlalchemy_alembic_or_any_server_module():
    report = json.loads(_run(CONTRACT_AND_SDK))
    assert {"contract.canonical", "contract.envelope", "contract.receipt", "contract.messages"} <= set(report["contract"])
    assert report["server"] == [] and report["blocked"] == []


def test_a_partner_seals_and_checks_an_envelope_with_the_sdk_and_the_contract_alone():
    assert _run(SEAL_AND_CHECK).strip() == "sealed and checked"


def test_the_check_itself_sees_a_server_dependency():
    # The same interpreter set-up refuses the server's storage code: the test above would have failed on it.
    done = subprocess.run([sys.executable, "-c", WITHOUT_SERVER_DEPENDENCIES + "import server.adapters.database\n"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode != 0 and "import of sqlalchemy halted" in done.stderr
