"""Metrics move with traffic, logs carry the caller's request id, /healthz tells readiness."""
from __future__ import annotations

import json
import logging
from decimal import Decimal

import grpc
import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from ecert.v1 import transmission_pb2 as tpb
from service_kit.logs import JsonFormatter, accept_request_id
from tests.factories import certificate, envelope
from tests.observability.conftest import http_get, http_json


def samples(running) -> dict[tuple[str, frozenset], float]:  # type: ignore[no-untyped-def]
    status, content_type, body = http_get(running, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(found, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    return found.get((name, frozenset(labels.items())), 0.0)


def submit(stub, env, request_id: str = ""):  # type: ignore[no-untyped-def]
    metadata = (("x-request-id", request_id),) if request_id else None
    return stub.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env), metadata=metadata)


def test_counters_move_after_traffic(server, transmission, partner):
    before = samples(server)
    handled = "ecert_grpc_server_handled_total"
    assert value(before, handled, grpc_service="ecert.v1.TransmissionService", grpc_method="SubmitCertificate", grpc_code="OK") == 0

    env = envelope(partner.signer)
    submit(transmission, env)
    submit(transmission, env)  # a retry: replayed, not a second transmission
    with pytest.raises(grpc.RpcError):
        submit(transmission, envelope(partner.signer, certificate("MX26-00000002", htsus_number="61091"), message_id="m-2"))
    with pytest.raises(grpc.RpcError):
        submit(transmission, envelope(partner.signer, certificate(quantity="5")))  # message id reused: no receipt
    with pytest.raises(grpc.RpcError):
        transmission.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-99999999"))

    after = samples(server)
    submit_labels = {"grpc_service": "ecert.v1.TransmissionService", "grpc_method": "SubmitCertificate"}
    assert value(after, handled, **submit_labels, grpc_code="OK") == 2
    assert value(after, handled, **submit_labels, grpc_code="INVALID_ARGUMENT") == 1
    assert value(after, handled, **submit_labels, grpc_code="ALREADY_EXISTS") == 1
    assert value(after, handled, grpc_service="ecert.v1.TransmissionService", grpc_method="GetCertificate", grpc_code="NOT_FOUND") == 1
    assert value(after, "ecert_grpc_server_handling_seconds_count", **submit_labels) == 4
    assert value(after, "ecert_transmissions_total", action="create", outcome="accepted") == 1
    assert value(after, "ecert_transmissions_total", action="create", outcome="rejected") == 1
    assert value(after, "ecert_transmissions_total", action="unspecified", outcome="refused") == 1
    assert value(after, "ecert_transmissions_replayed_total") == 1
    assert value(after, "ecert_grpc_server_in_flight") == 0


def test_one_log_line_per_call_with_the_callers_request_id(server, transmission, partner, caplog):
    caplog.set_level(logging.INFO, logger="ecert.rpc")
    submit(transmission, envelope(partner.signer), request_id="partner-req-42")
    with pytest.raises(grpc.RpcError) as caught:
        transmission.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-99999999"))
    records = [r for r in caplog.records if r.name == "ecert.rpc"]
    assert [(r.method, r.code) for r in records] == [  # type: ignore[attr-defined]
        ("/ecert.v1.TransmissionService/SubmitCertificate", "OK"),
        ("/ecert.v1.TransmissionService/GetCertificate", "NOT_FOUND"),
    ]
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "partner-req-42" and line["code"] == "OK"
    assert line["method"].endswith("SubmitCertificate") and line["duration_ms"] >= 0
    assert records[1].reason == "CERTIFICATE_NOT_FOUND"  # type: ignore[attr-defined]
    # The first call's id was the caller's; the second, sent without one, got a fresh id, echoed back.
    echoed = dict(caught.value.trailing_metadata())["x-request-id"]
    assert len(echoed) == 32 and echoed != "partner-req-42"


def test_request_id_is_set_on_every_record_during_the_call():
    from service_kit.logs import request_id_var

    token = request_id_var.set("abc-1")
    try:
        record = logging.LogRecord("x", logging.WARNING, "f", 1, "hello %s", ("there",), None)
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "abc-1" and line["msg"] == "hello there" and line["level"] == "WARNING"


@pytest.mark.parametrize("incoming,kept", [("relay-7:abc", True), ("x" * 129, False), ("bad id\n", False), ("", False)])
def test_request_ids_from_callers_are_checked(incoming, kept):
    assert (accept_request_id(incoming) == incoming) is kept


def test_healthz_reports_ready_and_unknown_paths_404(server):
    status, body = http_json(server, "/healthz")
    assert status == 200 and body == {"status": "ready", "checks": {"grpc_serving": True, "database": True}}
    server.health.enter_graceful_shutdown()
    status, body = http_json(server, "/healthz")
    assert status == 503 and body["checks"]["grpc_serving"] is False
    assert http_get(server, "/nope")[0] == 404


def test_quota_page_is_served(server):
    status, content_type, body = http_get(server, "/quota")
    assert status == 200 and content_type.startswith("text/html") and "/quota.json" in body
    status, document = http_json(server, "/quota.json")
    assert status == 200 and set(document) == {"available", "levels"}


def test_claims_reversals_and_quota_fill_are_exported(server, transmission, partner):
    from ecert.v1 import match_pb2 as mpb
    from ecert.v1 import match_pb2_grpc
    from tests.factories import claim_line, small_levels

    server.use_cases.references.load(small_levels("metrics-test", {"9823.53.01": "1000"}))
    submit(transmission, envelope(partner.signer))
    match = match_pb2_grpc.MatchServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    first = match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(1))).result
    match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(1)))  # replayed
    match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(2, unit="KG")))  # mismatch: MFN
    match.ReverseClaim(mpb.ReverseClaimRequest(entry_number=first.entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CANCELED))
    match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(3, quantity="50")))  # 300 SME of 1000

    found = samples(server)
    assert value(found, "ecert_claims_total", kind="match", decision="preferential") == 2
    assert value(found, "ecert_claims_total", kind="match", decision="mfn_required") == 1
    assert value(found, "ecert_claims_replayed_total", kind="match") == 1
    assert value(found, "ecert_claim_reversals_total", kind="canceled") == 1
    tpl1 = {"tpl_number": "9823.53.01", "label": "TPL 1", "quota_year": "2026", "measure_unit": "SME"}
    assert value(found, "ecert_quota_fill_ratio", **tpl1) == pytest.approx(0.3)
    assert value(found, "ecert_quota_charged", **tpl1) == 300 and value(found, "ecert_quota_limit", **tpl1) == 1000
    status, document = http_json(server, "/quota.json")
    level = next(q for q in document["levels"] if q["tpl_number"] == "9823.53.01")
    assert document["available"] and (level["charged"], level["remaining"], level["state"]) == ("300", "700", "OPEN")


def test_each_call_gets_its_own_request_id(server, transmission, caplog):
    """The wrapped handlers are made once per method: the id is still each call's own."""
    caplog.set_level(logging.INFO, logger="ecert.rpc")

    def echoed(*metadata: tuple[str, str]) -> str:
        with pytest.raises(grpc.RpcError) as caught:
            transmission.GetCertificate(tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-99999999"),
                                        metadata=metadata or None)
        return dict(caught.value.trailing_metadata())["x-request-id"]

    assert echoed(("x-request-id", "first-1")) == "first-1"
    assert echoed(("x-request-id", "second-2")) == "second-2"
    fresh = {echoed(), echoed()}
    assert len(fresh) == 2 and all(len(i) == 32 for i in fresh)
    assert echoed(("x-request-id", "dup-a"), ("x-request-id", "dup-b")) == "dup-b"  # sent twice: the last one
    assert len(echoed(("x-request-id", "bad id"))) == 32
    logged = [r.request_id for r in caplog.records if r.name == "ecert.rpc"]  # type: ignore[attr-defined]
    assert logged[:2] == ["first-1", "second-2"] and set(logged[2:4]) == fresh and logged[4] == "dup-b"


def reference_line(record: logging.LogRecord) -> str:
    """The JSON line as the formatter first wrote it (a plain datetime, vars() and json.dumps each time)."""
    import datetime as dt

    from service_kit.logs import _STANDARD, request_id_var

    entry = {
        "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
        "level": record.levelname, "logger": record.name, "msg": record.getMessage(),
    }
    request_id = getattr(record, "request_id", "") or request_id_var.get()
    if request_id:
        entry["request_id"] = request_id
    entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
    if record.exc_info:
        entry["exc"] = logging.Formatter().formatException(record.exc_info)
    return json.dumps(entry, default=str, ensure_ascii=False)


@given(
    created=st.one_of(
        st.floats(min_value=-62_135_596_800, max_value=253_402_300_797, allow_nan=False),  # +1 s stays in range
        # just below a whole second, where the instant rounds up into the next one
        st.integers(0, 2_000_000_000).map(lambda s: s + 0.9999996),
        st.integers(0, 2_000_000_000).map(lambda s: s + 0.9995),
    ),
    extra=st.dictionaries(st.sampled_from(["method", "code", "peer", "level", "_private", "caller", "n"]),
                          st.one_of(st.text(), st.integers(), st.floats(allow_nan=False), st.none(), st.just(Decimal("1.5")))),
    request_id=st.sampled_from(["", "rid-1"]),
)
@examples(max_examples=300, deadline=None)
def test_the_json_line_is_the_one_first_written(created: float, extra: dict, request_id: str) -> None:
    formatter = JsonFormatter()  # one formatter, many lines: what it keeps between lines must not leak
    for at in (created, created + 0.0004, created + 1.0):
        record = logging.LogRecord("ecert.rpc", logging.INFO, "f", 1, "rpc %s é", ("x",), None)
        record.created = at
        for key, value in {**extra, **({"request_id": request_id} if request_id else {})}.items():
            setattr(record, key, value)
        assert formatter.format(record) == reference_line(record)


def test_an_exception_is_in_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, "f", 1, "failed", None, sys.exc_info())
    line = JsonFormatter().format(record)
    assert line == reference_line(record) and "ValueError: boom" in json.loads(line)["exc"]
