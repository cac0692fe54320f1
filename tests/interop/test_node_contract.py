"""The Node.js implementation of the signed-document contract (tests/interop/node/contract.mjs, written from the
README with node:crypto only) reproduces every vector in tests/vectors/wire-contract.json byte for byte, and the
vectors the contract package (contract/, the Python implementation every party imports) computes afresh.

contract.mjs needs Node.js but no npm package; without node the test skips with the interop tests' message
(in CI, CI=true, it fails instead).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

from tests.interop.test_node_client import NODE_DIR, NODE_MISSING, ROOT, _need

VECTORS = ROOT / "tests" / "vectors" / "wire-contract.json"


def test_the_node_implementation_matches_every_wire_contract_vector():
    node = shutil.which("node")
    _need(node is not None, NODE_MISSING)
    assert node is not None
    done = subprocess.run([node, "contract.mjs", "../../vectors/wire-contract.json"],
                          capture_output=True, text=True, timeout=60, cwd=NODE_DIR)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert report == {"checked": len(vectors["envelopes"]) + len(vectors["receipts"]), "failures": []}


def test_the_node_implementation_agrees_with_what_the_contract_package_produces_now(tmp_path):
    """The same check on vectors the contract package (contract/) computes afresh from the committed inputs, not on
    the committed file: Node.js and the Python contract agree on today's code, not only on the file's bytes."""
    node = shutil.which("node")
    _need(node is not None, NODE_MISSING)
    assert node is not None
    generated = subprocess.run([sys.executable, "-m", "tests.vectors.generate"], capture_output=True, text=True,
                               timeout=60, cwd=ROOT, check=True).stdout
    fresh = tmp_path / "fresh-vectors.json"
    fresh.write_text(generated, encoding="utf-8")
    done = subprocess.run([node, "contract.mjs", str(fresh)], capture_output=True, text=True, timeout=60, cwd=NODE_DIR)
    assert done.returncode == 0, done.stdout + done.stderr
    vectors = json.loads(generated)
    assert json.loads(done.stdout) == {"checked": len(vectors["envelopes"]) + len(vectors["receipts"]), "failures": []}
