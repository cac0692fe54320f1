"""Every RPC of every service the server offers, fed hostile input: each answer is a clean status
(never INTERNAL or UNKNOWN), and a refused call leaves the stored data exactly as they were.

Runs on SQLite and on PostgreSQL (which, unlike SQLite, refuses NUL characters and over-long text).
Derandomised, so that CI is repeatable; raise ECERT_FUZZ_EXAMPLES locally to search harder.
"""
from __future__ import annotations

import datetime as dt
import os

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

import ecert.v1.match_pb2  # noqa: F401 - registers the descriptors of every ecert.v1 service
import ecert.v1.quota_pb2  # noqa: F401
from contract.log_entry import LogEntry
from ecert.v1 import transmission_pb2 as tpb
from server.app import SERVICE_NAMES
from tests.factories import NOW, REPLACE, certificate, envelope
from tests.fuzz import hostile
from tests.grpc_errors import rich_error

EXAMPLES = int(os.environ.get("ECERT_FUZZ_EXAMPLES", "30"))
UNCLEAN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def methods() -> list[MethodDescriptor]:
    pool = descriptor_pool.Default()
    return [m for name in SERVICE_NAMES for m in pool.FindServiceByName(name).methods]


# The transparency log's sequencer writes these in the background (indices, nodes, checkpoints).
SEQUENCED = {"log_nodes", "log_checkpoints", "log_cosignatures"}


def _kept(row) -> bool:  # type: ignore[no-untyped-def]
    """Every stored row but the log entry of a refused transmission's signed rejection receipt, which
    customs logs by design (README, "Proving what customs recorded")."""
    if row.kind != "RECEIPT":
        return True
    return bool(LogEntry.decode(bytes(row.entry)).facts["outcome"] != "REJECTED")


def snapshot(server) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    engine = server.database.read_engine
    with engine.connect() as connection:
        tables = [t for t in inspect(connection).get_table_names() if t not in {"alembic_version", *SEQUENCED}]
        found = {t: sorted(map(repr, connection.execute(text(f"SELECT * FROM {t}")))) for t in tables if t != "log_entries"}
        entries = connection.execute(text("SELECT id, kind, subject, entry FROM log_entries"))
        found["log_entries"] = sorted(repr(tuple(row)) for row in entries if _kept(row))
        return found


def call(channel: grpc.Channel, method: MethodDescriptor, payload: bytes) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            # A valid watch streams until its deadline: a short one ends it (DEADLINE_EXCEEDED is clean).
            for _ in zip(range(3), channel.unary_stream(path)(payload, timeout=0.2)):
                pass
        else:
            channel.unary_unary(path)(payload, timeout=30)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
def seeded(transmission, partner, server):  # type: ignore[no-untyped-def]
    """One stored certificate, so that reads and replaces have something to find."""
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer)))
    # Settle what a background timer would write anyway (the period's opening allocation), so that
    # a change seen during the test can only come from a call.
    server.use_cases.claims.allocate_due_openings()
    return server


def test_hostile_bytes_at_every_rpc_get_clean_answers_and_change_nothing(seeded, channel):
    """One server for all methods (a server per method would cost more than the fuzzing)."""
    for method in methods():
        state = {"before": snapshot(seeded)}

        @FUZZ
        @given(payload=hostile.request_bytes(method.input_type))
        def check(payload: bytes) -> None:
            code = call(channel, method, payload)
            assert code not in UNCLEAN, (method.name, payload[:200])
            after = snapshot(seeded)
            if code != grpc.StatusCode.OK:
                assert after == state["before"], f"{method.name} refused ({code}) but changed stored data"
            state["before"] = after

        check()


CERTIFICATE_FIELDS = {
    "quantity": st.sampled_from(["0", "-1", "-0", "1e3", "NaN", "Infinity", "1" * 400, "0.0000001", "１２", "\x00", ""]),
    "quota_year": hostile.hostile_int32,
    "issue_date": st.sampled_from(["0000-01-01", "9999-12-31", "2026-13-01", "2026-02-30", "", "\x00", "+2026-01-01"]),
    "last_valid_date": st.sampled_from(["0001-01-01", "9999-12-31", "2026-12-32", "31/12/2026", "\x00"]),
    "goods_description": hostile.hostile_text,
    "certificate_number": hostile.hostile_text,
    "htsus_number": hostile.hostile_text,
    "unit": hostile.hostile_text,
    "importer_of_record": hostile.hostile_text,
    "invoice_number": hostile.hostile_text,
    "tpl_number": hostile.hostile_text,
}


@FUZZ
@given(
    changes=st.fixed_dictionaries({"quantity": CERTIFICATE_FIELDS["quantity"]},
                                  optional={k: v for k, v in CERTIFICATE_FIELDS.items() if k != "quantity"}),
    action=st.sampled_from([tpb.TRANSMISSION_ACTION_CREATE, REPLACE, tpb.TRANSMISSION_ACTION_UNSPECIFIED, 77]),
    replaces_version=st.sampled_from([0, 1, -1, 2**31 - 1]),
    message_id=st.one_of(st.just("fuzz-1"), hostile.hostile_text),
)
def _signed_hostile(seeded, transmission, partner, changes, action, replaces_version, message_id):  # type: ignore[no-untyped-def]
    env = envelope(partner.signer, certificate(**changes), action=action, replaces_version=replaces_version,
                   message_id=message_id, sent_at=NOW)
    before = snapshot(seeded)
    for rpc in (transmission.ValidateCertificate, transmission.SubmitCertificate):
        request = (tpb.ValidateCertificateRequest if rpc is transmission.ValidateCertificate else tpb.SubmitCertificateRequest)(envelope=env)
        try:
            rpc(request, timeout=30)
        except grpc.RpcError as error:
            assert error.code() not in UNCLEAN, changes
            continue
        # A hostile quantity can never make a valid certificate: only the dry run may answer OK.
        assert rpc is transmission.ValidateCertificate, changes
    assert snapshot(seeded) == before


def test_signed_envelopes_with_hostile_certificates_are_refused_cleanly(seeded, transmission, partner):
    """Correctly signed, so that every validation rule runs on the hostile values, not just the signature."""
    _signed_hostile(seeded, transmission, partner)


def test_timestamps_out_of_range_are_refused_cleanly(seeded, transmission, partner):
    before = snapshot(seeded)
    for seconds, nanos in [(-62135596801, 0), (253402300800, 0), (2**62, 0), (-(2**62), 0), (0, -1), (0, 10**9)]:
        env = envelope(partner.signer, sent_at=dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc))
        env.sent_at.seconds, env.sent_at.nanos = seconds, nanos
        with pytest.raises(grpc.RpcError) as caught:
            transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert rich_error(caught.value).fields == {"envelope.sent_at": "TIMESTAMP_OUT_OF_RANGE"}
    assert snapshot(seeded) == before
