"""CLI tests: `ecert` runs as a subprocess against a real server on a real port (system clock)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf import json_format

from contract.keys import save_private_key
from server.service.clock import SystemClock
from tests.factories import certificate

ECERT = [sys.executable, "-m", "client.cli"]
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def clock() -> SystemClock:
    return SystemClock()


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_ecert(args: list[str], env: dict[str, str], stdin: str | None = None, timeout: float = 60) -> Result:
    done = subprocess.run([*ECERT, *args], input=stdin, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli_env(server) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECERT_")}
    env.update(ECERT_TARGET=f"127.0.0.1:{server.port}", ECERT_INSECURE="1", COLUMNS="200", NO_COLOR="1")
    return env


@pytest.fixture
def ecert(cli_env) -> Callable[..., Result]:  # type: ignore[no-untyped-def]
    def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
        return run_ecert(list(args), {**cli_env, **(env or {})}, stdin)

    return run


@pytest.fixture
def key_file(tmp_path: pathlib.Path, partner) -> pathlib.Path:  # type: ignore[no-untyped-def]
    """The partner's document-signing key as `ecert pki init` lays it out: PEM plus a .key-id beside it."""
    path = tmp_path / "partner" / "document-signing.pem"
    save_private_key(path, partner.signer.private_key)
    path.with_suffix(".key-id").write_text(partner.signer.key_id + "\n")
    return path


def certificate_dict(number: str = "MX26-00000001", **changes: Any) -> dict[str, Any]:
    return json_format.MessageToDict(certificate(number, **changes), preserving_proto_field_name=True)


def write_json(path: pathlib.Path, value: Any) -> pathlib.Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


@pytest.fixture
def database_url() -> str:
    """The CLI is what these tests exercise, not storage: they run on the default SQLite file only."""
    return ""
