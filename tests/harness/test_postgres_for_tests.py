"""The README's test command runs the PostgreSQL tests everywhere: without ECERT_TEST_POSTGRES_URL the
session starts a throwaway cluster itself (tests/databases.py) and removes it; only when none can be
had are the tests skipped, saying how to enable them, or failed where ECERT_REQUIRE_POSTGRES is set."""
from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests import databases

ROOT = pathlib.Path(__file__).resolve().parents[2]
# One PostgreSQL test, run by a child pytest: what a contributor's `python -m pytest` does with it.
ONE_POSTGRES_TEST = "tests/integration/test_transmission_api.py::test_cancel_marks_the_certificate_canceled[postgres]"


def _child_pytest(env_changes: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run([sys.executable, "-m", "pytest", ONE_POSTGRES_TEST, "-q", "-rs", "-p", "no:cacheprovider"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def cluster_or_skip() -> databases.ThrowawayCluster:
    try:
        return databases.ThrowawayCluster.start()
    except databases.ClusterUnavailable as exc:
        databases.unavailable(str(exc))
        raise


@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_a_throwaway_cluster_answers_and_is_removed_when_stopped(cluster_or_skip):
    cluster = cluster_or_skip
    url = make_url(cluster.url)
    assert url.host == "127.0.0.1" and cluster.directory.is_dir()
    engine = create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
    cluster.stop()
    assert not cluster.directory.exists()
    assert not _accepts(url.port)


def test_a_cluster_that_cannot_start_is_reported_with_the_scripts_reason(tmp_path):
    failing = tmp_path / "pg-cluster"
    failing.write_text("#!/bin/sh\necho 'pg-cluster: no PostgreSQL server binaries' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(databases.ClusterUnavailable, match="no PostgreSQL server binaries"):
        databases.ThrowawayCluster.start(failing)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_without_a_configured_server_the_session_starts_one_and_removes_it(cluster_or_skip):
    cluster_or_skip.stop()  # binaries are there: the child session must run the test, not skip it
    # The child's temporary folder is its own, so that what it leaves there is known (other sessions on this
    # machine may be making clusters meanwhile); open to the postgres user, which runs the cluster as root.
    own = pathlib.Path(tempfile.mkdtemp(prefix="ecert-harness."))
    try:
        own.chmod(0o755)
        done = _child_pytest({databases.URL_VARIABLE: None, databases.REQUIRE_VARIABLE: None, "TMPDIR": str(own)})
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 passed" in done.stdout and "1 on postgres" in done.stdout
        assert not list(own.glob("ecert-test-pg.*"))  # its cluster is gone
    finally:
        shutil.rmtree(own, ignore_errors=True)


@pytest.mark.slow
def test_an_unreachable_configured_server_skips_saying_how_and_fails_where_required():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    skipped = _child_pytest({databases.URL_VARIABLE: url, databases.REQUIRE_VARIABLE: None})
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    assert "not reachable" in skipped.stdout and f"unset {databases.URL_VARIABLE}" in skipped.stdout

    required = _child_pytest({databases.URL_VARIABLE: url, databases.REQUIRE_VARIABLE: "1"})
    assert required.returncode == 1, required.stdout
    assert f"{databases.REQUIRE_VARIABLE} is set" in required.stdout
