"""What must never import what (docs/architecture.md): checked on the source, so a new import that
crosses a layer fails here, not in review. The rules are the server's layers (DESIGN.md section 5):
app -> api -> service -> adapters -> domain, the domain pure; the wire contract (contract/), which
every party imports and which imports none of them; and the service kit (service_kit/), the gRPC
plumbing every party may run, which imports only the contract.
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
    # The service kit: the contract, gRPC, OpenTelemetry, Prometheus, cryptography; no party (nor the
    # generated protos: a party names the message types of its own that the kit should know).
    "service_kit": {
        "service_kit", "contract", "grpc", "grpc_status", "google.protobuf", "google.rpc", "opentelemetry", "prometheus_client",
        "cryptography",
    },
    # Pure: no gRPC, no SQLAlchemy, no protobuf, no other layer; the contract's protobuf-free modules.
    "server/domain": {"server.domain", "contract", "cryptography", "holidays"},
    # Storage and files: the domain, SQLAlchemy, the kit's watched files; never the use cases or the API.
    "server/adapters": {
        "server.domain", "server.adapters", "contract", "sqlalchemy", "cryptography", "grpc", "alembic", "service_kit.watched_files",
    },
    # Use cases: the domain and the adapters; never gRPC or the generated protos (servicers translate).
    "server/service": {
        "server.domain", "server.adapters", "server.service", "server.observability", "contract", "sqlalchemy", "cryptography",
    },
}
# Layers that may import only the contract modules that need no protobuf (directly or through another).
PROTOBUF_FREE_LAYERS = ("server/domain", "server/service")
FORBIDDEN_EVERYWHERE_IN_SERVER = {"client", "gateway_sim", "tests", "bench"}
# The server's layers that may use the kit like a library (the adapters: only its watched files, above).
SERVICE_KIT_USERS = ("server/api", "server/observability", "server/app.py")


def _imported(node: ast.AST) -> list[str]:
    """The modules an import statement names: `from package import module` names package.module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        package = ROOT.joinpath(*node.module.split("."))
        submodules = [f"{node.module}.{a.name}" for a in node.names if (package / f"{a.name}.py").is_file()]
        return submodules if len(submodules) == len(node.names) else [node.module, *submodules]
    return []


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return {module for node in ast.walk(tree) for module in _imported(node)}


def _imports_by_place(path: pathlib.Path) -> set[tuple[str, bool]]:
    """(module, inside a function) for every import of the file: a function's imports run when it is called,
    the others when the module is imported."""
    found: set[tuple[str, bool]] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for module in _imported(node):
            found.add((module, in_function))
        for child in ast.iter_child_nodes(node):
            visit(child, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
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


def test_only_the_api_the_app_and_observability_use_the_service_kit():
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "server").rglob("*.py"))
        for module in sorted(_imports(path))
        if module.split(".")[0] == "service_kit"
        and not path.relative_to(ROOT).as_posix().startswith(SERVICE_KIT_USERS)
        and not (path.relative_to(ROOT).as_posix().startswith("server/adapters/") and module == "service_kit.watched_files")
    ]
    assert offenders == [], "docs/architecture.md, 'The service kit'"


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


# -- the parties around the service ------------------------------------------------------------------------
# The SDK, the simulated partner and relay, the contract and the service kit import no server code; the
# `ecert` command does only in the server's own commands, inside their functions, so that `ecert` stays
# one command. What the relay, the gateway and the witness share with the service (logs, traces, the
# interceptor, the authorizer, the revocation list, error statuses) is the service kit's.

SERVER_FREE = ("client/sdk", "gateway_sim", "contract", "service_kit")
SERVER_COMMANDS = {"serve", "db", "database", "audit", "reference", "reconcile", "pki"}


def _server_imports(root: pathlib.Path, folder: str) -> set[tuple[str, str, bool]]:
    """(file, server module, inside a function) for every import of server code under `folder`."""
    return {
        (path.relative_to(root).as_posix(), module, lazy)
        for path in sorted((root / folder).rglob("*.py"))
        for module, lazy in _imports_by_place(path)
        if module.split(".")[0] == "server"
    }


def _misplaced_server_imports(root: pathlib.Path) -> list[str]:
    found = set().union(*(_server_imports(root, folder) for folder in ("client", "gateway_sim", "contract", "service_kit")))
    offenders = []
    for file, module, lazy in sorted(found):
        command = file.removeprefix("client/commands/").removesuffix(".py")
        if file.startswith(SERVER_FREE):
            offenders.append(f"{file}: {module} (imports no server code at all)")
        elif not lazy:
            offenders.append(f"{file}: {module} (at import time)")
        elif not (file.startswith("client/commands/") and command in SERVER_COMMANDS):
            offenders.append(f"{file}: {module} (only the server's own commands may, inside their functions)")
    return offenders


def test_the_sdk_the_simulator_and_the_contract_import_no_server_code_and_the_cli_only_in_server_commands():
    assert _misplaced_server_imports(ROOT) == [], "docs/architecture.md, 'Parties'"


def test_server_imports_outside_the_server_are_caught(tmp_path: pathlib.Path):
    # The check itself, on a copy of the layout: a lazy import in the SDK, a module-level one in a server
    # command, a lazy one in a command that is not the server's; a lazy one in `ecert serve` is allowed.
    files = {
        "client/sdk/bad.py": "def f():\n    from server.domain.errors import DomainError\n",
        "client/commands/serve.py": "import server.config\n\ndef serve():\n    from server.app import create_server\n",
        "client/commands/submit.py": "def submit():\n    from server.adapters.keystore import load_trust_store\n",
        "gateway_sim/gateway/bad.py": "from server.domain.transmission import Envelope\n",
        "contract/bad.py": "import server\n",
        "service_kit/bad.py": "def f():\n    from server.api.auth import POLICY\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert _misplaced_server_imports(tmp_path) == [
        "client/commands/serve.py: server.config (at import time)",
        "client/commands/submit.py: server.adapters.keystore (only the server's own commands may, inside their functions)",
        "client/sdk/bad.py: server.domain.errors (imports no server code at all)",
        "contract/bad.py: server (imports no server code at all)",
        "gateway_sim/gateway/bad.py: server.domain.transmission (imports no server code at all)",
        "service_kit/bad.py: server.api.auth (imports no server code at all)",
    ]
