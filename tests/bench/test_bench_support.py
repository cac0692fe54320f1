"""The benchmark's own parts: bulk-loaded rows must read back as the service's rows, and the echo
baseline must sit behind the same interceptors as the real services."""
from __future__ import annotations

import datetime as dt
import pathlib

import grpc
import pytest

from bench import dataset
from bench.echo import register_echo
from bench.workload import GOODS, build
from ecert.bench.v1 import echo_pb2, echo_pb2_grpc
from server.adapters.database import Database
from server.api import claim_converters as conv
from server.app import build_use_cases, create_server
from server.config import Settings
from server.service.clock import FixedClock

NOW = dt.datetime(2026, 6, 15, 12, tzinfo=dt.timezone.utc)

pytestmark = pytest.mark.sqlite


def _use_cases(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    database = Database(f"sqlite:///{tmp_path / 'ecert.db'}")
    database.upgrade()
    (tmp_path / "trust.json").write_text('{"keys": []}')
    settings = Settings(data_dir=tmp_path, trust_store=str(tmp_path / "trust.json"), receipt_key="")
    return database, settings


def test_bulk_loaded_certificates_match_claims_built_by_the_load_generator(tmp_path: pathlib.Path) -> None:
    database, settings = _use_cases(tmp_path)
    path = str(tmp_path / "ecert.db")
    for first, (tpl, good) in enumerate(GOODS.items()):
        dataset.load_certificates(path, good, first=first * 10 + 1, count=3, quantity=1000, quota_year=2026, at=NOW)
    dataset.load_claims(path, GOODS["9823.53.01"], count=5, certificates=(1, 3), quota_year=2026, at=NOW, filer="B77")
    use_cases = build_use_cases(settings, database, FixedClock(NOW))
    recipe = {"rpc": "match", "quota_year": 2026, "imported": "2026-06-01", "first_entry": 1, "count": 10,
              "certificates": {tpl: [n * 10 + 1, 3] for n, tpl in enumerate(GOODS)}, "quantity": {tpl: "2" for tpl in GOODS}}
    decisions = [use_cases.claims.match(conv.line_from_proto(r.line))[0] for r in build(recipe, NOW)]
    assert [(d.decision, d.mismatches) for d in decisions] == [("PREFERENTIAL", ())] * 10
    # The bulk-loaded claims are on file under their own entry numbers.
    usage = use_cases.claims.usage("MX", "MX26-00000001")
    assert usage.used_quantity == 2 and len(usage.uses) >= 2
    database.dispose()


def test_echo_is_served_behind_the_same_interceptors(tmp_path: pathlib.Path) -> None:
    _, settings = _use_cases(tmp_path)
    settings.port = 0
    running = create_server(settings, address="127.0.0.1:0", clock=FixedClock(NOW), extra_services=[register_echo])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            answer, call = echo_pb2_grpc.EchoServiceStub(channel).Echo.with_call(echo_pb2.EchoRequest(payload=b"ping"), timeout=5)
        assert answer.payload == b"ping"
        # The observability interceptor saw it: it echoes the request id (in the trailers).
        assert any(key == "x-request-id" for key, _ in call.trailing_metadata())
    finally:
        running.stop(0)


def test_each_measurement_reports_the_servers_cpu_per_call(tmp_path: pathlib.Path) -> None:
    """The load generator marks each measurement; the bench reads the server process's CPU time at the
    marks. A server that did work for the calls shows a positive cost per call, within reason."""
    from bench import cli

    workspace = cli.Workspace(tmp_path)
    with cli.ServerProcess(workspace, "cpu", tls=False, epoch=cli.MAIN_EPOCH) as server:
        results = cli.load(workspace, server, {"rpc": "echo"}, in_flight=(1, 4), duration_s=0.3, warmup_s=0.1)
    assert [r["calls"] > 0 for r in results] == [True, True]
    for result in results:
        assert 0 < result["server_cpu_ms_per_call"] < 50
