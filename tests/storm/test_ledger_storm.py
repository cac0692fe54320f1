"""The ledger storm (tests/ledger_storm.py) on each engine: two real replicas, one lagging 30 s, across
an opening that makes prorated offers, then answers to them and, after a restart on clocks moved to
the offers' deadline, their lapse. Bounded for CI; ECERT_STORM_OPERATIONS, ECERT_STORM_THREADS and ECERT_STORM_SEED make it a
longer soak (for example ECERT_STORM_OPERATIONS=20000), and the seed it ran with is printed."""
from __future__ import annotations

import os
import pathlib

import pytest

from tests.factories import new_signer
from tests.ledger_storm import Storm, StormConfig, assert_invariants
from tests.processes import Deployment

pytestmark = pytest.mark.slow

OPERATIONS = int(os.environ.get("ECERT_STORM_OPERATIONS", "500"))
THREADS = int(os.environ.get("ECERT_STORM_THREADS", "24"))
SEED = int(os.environ.get("ECERT_STORM_SEED", "20261129"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    """An empty database of each engine: the replicas' own start-up migrates it."""
    if request.param == "sqlite":
        (tmp_path / "shared").mkdir(exist_ok=True)
        return f"sqlite:///{tmp_path / 'shared' / 'ecert.db'}"
    server = request.getfixturevalue("postgres_server")
    name = server.create()
    request.addfinalizer(lambda: server.drop(name))
    return str(server.url_of(name))


def test_the_ledger_holds_under_a_storm_of_two_replicas_across_an_opening(tmp_path: pathlib.Path, database_url: str, capsys):  # type: ignore[no-untyped-def]
    deployment = Deployment(tmp_path, database_url, new_signer("mx-se-2026-1"))
    storm = Storm(deployment, StormConfig(seed=SEED, operations=OPERATIONS, threads=THREADS), "postgres" if "postgresql" in database_url else "sqlite")
    storm.start()
    try:
        report = storm.run()
    finally:
        storm.stop()
    totals = assert_invariants(deployment, report)
    with capsys.disabled():
        print(f"\n{report.line()}; stored: {totals}")
