"""What must never import what (docs/architecture.md): checked on the source, so a new import that
crosses a layer fails here, not in review. The rules are the server's layers (DESIGN.md section 5):
app -> api -> service -> adapters -> domain, the domain pure; and the wire contract (contract/), which
every party imports and which imports none of them.
"""
from __future__ import annotations

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Top-level packages each layer may import, besides the standard library and its own layer.
RULES = {
    # The wire contract: the standard library, cryptography, protobuf and the generated protos; no party.
    "contract": {"contract", "cryptography", "ecert", "google.protobuf"},
    # Pure: no gRPC, no SQLAlchemy, no protobuf, no other layer; the contract's protobuf-free modules.
    "server/domain": {"server.domain", "contract", "cryptography", "holidays"},
    # Storage and files: the domain, SQLAlchemy; never the use cases or the API.
    "server/adapters": {"server.domain", "server.adapters", "contract", "sqlalchemy", "cryptography", "grpc", "alembic"},
    # Use cases: the domain and the adapters; never gRPC or the generated protos (servicers translate).
    "server/service": {
        "server.domain", "server.adapters", "server.service", "server.observability", "contract", "sqlalchemy", "cryptography",
    },
}
# Layers that may import only the contract modules that need no protobuf (directly or through another).
PROTOBUF_FREE_LAYERS = ("server/domain", "server/service")
FORBIDDEN_EVERYWHERE_IN_SERVER = {"client", "gateway_sim", "tests", "bench"}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _allowed(module: str, allowed: set[str]) -> bool:
    top = module.split(".")[0]
    if top in STDLIB:
        return True
    return any(module == a or module.startswith(a + ".") for a in allowed)


STDLIB = set(sys.stdlib_module_names)


@pytest.mark.parametrize("layer", sorted(RULES))
def test_each_layer_imports_only_what_it_may(layer: str):
    offenders = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for module in sorted(_imports(path)):
            if not _allowed(module, RULES[layer]):
                offenders.append(f"{path.relative_to(ROOT)}: {module}")
    assert offenders == [], "imports across the layers (docs/architecture.md):\n" + "\n".join(offenders)


def _protobuf_free_contract_modules() -> set[str]:
    """Contract modules importing only the standard library, cryptography and each other (a fixed point)."""
    modules = {f"contract.{p.stem}": _imports(p) for p in (ROOT / "contract").glob("*.py") if p.stem != "__init__"}
    free = set(modules)
    while True:
        kept = {m for m in free if all(_allowed(i, {"cryptography"} | free) for i in modules[m])}
        if kept == free:
            return free
        free = kept


@pytest.mark.parametrize("layer", PROTOBUF_FREE_LAYERS)
def test_the_domain_and_the_use_cases_import_only_protobuf_free_contract_modules(layer: str):
    free = _protobuf_free_contract_modules()
    assert {"contract.canonical", "contract.findings", "contract.receipt", "contract.signing"} <= free
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / layer).rglob("*.py"))
        for module in sorted(_imports(path))
        if module.split(".")[0] == "contract" and module != "contract" and module not in free
    ]
    assert offenders == [], "contract modules that pull in protobuf:\n" + "\n".join(offenders)


def test_the_server_imports_no_client_simulator_or_test_code():
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "server").rglob("*.py"))
        for module in sorted(_imports(path))
        if module.split(".")[0] in FORBIDDEN_EVERYWHERE_IN_SERVER
    ]
    assert offenders == []


def test_a_forbidden_import_is_caught(tmp_path: pathlib.Path):
    # The check itself: a domain module importing SQLAlchemy is reported.
    module = tmp_path / "bad.py"
    module.write_text("from sqlalchemy import select\nimport grpc\n", encoding="utf-8")
    assert {m for m in _imports(module) if not _allowed(m, RULES["server/domain"])} == {"sqlalchemy", "grpc"}
