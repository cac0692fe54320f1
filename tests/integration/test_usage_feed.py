"""The partner's utilization feed (UsageService.WatchCertificateUsage, issue 17 item 9) over a real
server on each engine: every charge and reversal of Mexico's certificates, in log order, each with a
log position whose inclusion proof verifies; scoped to the caller's country over mutual TLS; resumed
from a cursor across a restart with nothing lost or repeated; followed live; `ecert usage watch`."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest

from client.tls import server_credentials
from contract import merkle
from contract.log_entry import LogEntry
from ecert.v1 import log_pb2 as lpb
from ecert.v1 import log_pb2_grpc, match_pb2_grpc, transmission_pb2_grpc, usage_pb2_grpc
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import usage_pb2 as upb
from server.api.quota_servicer import WATCH_ENDED_KEY, WATCH_ENDED_MAX_DURATION
from server.app import RunningServer, create_server
from tests.factories import claim_line, envelope
from tests.grpc_errors import rich_error
from tests.tls_fixtures import channel_as, pki  # noqa: F401 - fixtures


class Servers:
    """Servers over the test's database, stopped at the end unless a test stopped them first."""

    def __init__(self, settings, clock, pki):  # type: ignore[no-untyped-def]  # noqa: F811
        self.settings, self.clock, self.pki = settings, clock, pki
        self.running: list[RunningServer] = []

    def plain(self) -> RunningServer:
        server = create_server(self.settings, address="127.0.0.1:0", clock=self.clock)
        self.running.append(server)
        return server

    def secure(self) -> RunningServer:
        """A replica over mutual TLS, as partners reach the service."""
        service = self.pki.dir("service")
        settings = dataclasses.replace(self.settings, tls_dir=str(service))
        server = create_server(settings, address="127.0.0.1:0", clock=self.clock, credentials=server_credentials(service))
        self.running.append(server)
        return server

    def stop(self, server: RunningServer) -> None:
        self.running.remove(server)
        server.stop(0)


@pytest.fixture
def servers(settings, clock, pki) -> Iterator[Servers]:  # type: ignore[no-untyped-def]  # noqa: F811
    made = Servers(settings, clock, pki)
    yield made
    for server in reversed(made.running):
        server.stop(0)


def plain_channel(server: RunningServer) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{server.port}")


def usage_stub(channel: grpc.Channel) -> usage_pb2_grpc.UsageServiceStub:
    return usage_pb2_grpc.UsageServiceStub(channel)


def watch(channel: grpc.Channel, cursor: str = "", **fields: object) -> list[upb.UsageEvent]:
    return list(usage_stub(channel).WatchCertificateUsage(upb.WatchCertificateUsageRequest(cursor=cursor, **fields), timeout=20))


def history(server: RunningServer, partner) -> list[mpb.ClaimResult]:  # type: ignore[no-untyped-def]
    """Mexico's certificate, three claims on it and the second reversed; all integrated into the log."""
    channel = plain_channel(server)
    transmission_pb2_grpc.TransmissionServiceStub(channel).SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer)))
    match = match_pb2_grpc.MatchServiceStub(channel)
    claims = [match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(k))).result for k in (1, 2, 3)]
    match.ReverseClaim(mpb.ReverseClaimRequest(entry_number=claims[1].entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CANCELED,
                                               reason="entry canceled"))
    server.use_cases.log.integrate()
    return claims


def expected_shape(events: list[upb.UsageEvent], claims: list[mpb.ClaimResult]) -> None:
    assert [(e.kind, e.claim_id) for e in events] == [
        ("DECISION", claims[0].claim_id), ("DECISION", claims[1].claim_id), ("DECISION", claims[2].claim_id),
        ("REVERSAL", claims[1].claim_id),
    ]
    indices = [e.log_index for e in events]
    assert indices == sorted(indices) and len(set(indices)) == 4
    assert all(e.cursor == str(e.log_index) for e in events)
    assert {(e.issuing_country, e.certificate_number, e.certificate_version) for e in events} == {("MX", "MX26-00000001", 1)}
    granted = events[0]
    assert (granted.entry_number, granted.line_number, granted.decision, granted.unit) == (claims[0].entry_number, 1, "PREFERENTIAL", "DOZ")
    assert granted.granted_quantity == claims[0].granted_quantity
    reversal = events[3]
    assert (reversal.decision, reversal.returned_quantity, reversal.unit) == ("", claims[1].granted_quantity, "DOZ")


def test_mexicos_partner_sees_its_charges_and_reversals_in_log_order_each_proved_in_the_log(servers, partner):
    server = servers.plain()
    claims = history(server, partner)
    replica = servers.secure()
    events = watch(channel_as(servers.pki, "gateway-mx", replica.port))
    expected_shape(events, claims)
    log = log_pb2_grpc.LogServiceStub(plain_channel(server))
    checkpoint = log.GetCheckpoint(lpb.GetCheckpointRequest())
    for event in events:
        # The partner recomputes the leaf from the entry's bytes and checks it against the signed tree.
        assert hashlib.sha256(b"\x00" + event.entry).digest() == event.leaf_hash
        facts = LogEntry.decode(event.entry).facts
        assert facts["claim_id"] == event.claim_id and facts["certificate"] == "MX/MX26-00000001@1"
        proof = log.GetInclusionProof(lpb.GetInclusionProofRequest(leaf_index=event.log_index, tree_size=checkpoint.tree_size))
        assert merkle.verify_inclusion(event.log_index, checkpoint.tree_size, event.leaf_hash, list(proof.hashes), checkpoint.root_hash)


def test_another_countrys_partner_sees_none_of_mexicos_and_customs_sees_them_all(servers, partner):
    server = servers.plain()
    claims = history(server, partner)
    replica = servers.secure()
    assert watch(channel_as(servers.pki, "partner-gt", replica.port)) == []
    expected_shape(watch(channel_as(servers.pki, "customs", replica.port)), claims)
    assert watch(channel_as(servers.pki, "admin", replica.port), issuing_country="GT") == []
    assert len(watch(channel_as(servers.pki, "relay", replica.port), issuing_country="MX")) == 4
    # Asking for Mexico's by name does not help Guatemala's partner.
    with pytest.raises(grpc.RpcError) as caught:
        watch(channel_as(servers.pki, "partner-gt", replica.port), issuing_country="MX")
    assert (rich_error(caught.value).code, rich_error(caught.value).reason) == (grpc.StatusCode.PERMISSION_DENIED, "COUNTRY_NOT_CALLERS")


@pytest.mark.parametrize("party", ["importer", "no-role"])
def test_a_role_without_access_is_refused(servers, party):
    replica = servers.secure()
    with pytest.raises(grpc.RpcError) as caught:
        watch(channel_as(servers.pki, party, replica.port))
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.PERMISSION_DENIED and error.reason in {"ROLE_NOT_ALLOWED", "ROLE_MISSING"}


@pytest.mark.parametrize(("cursor", "reason"), [("abc", "CURSOR_MALFORMED"), ("-1", "CURSOR_MALFORMED"), ("4000", "CURSOR_BEYOND_LOG")])
def test_a_bad_cursor_is_invalid_argument(servers, cursor, reason):
    server = servers.plain()
    server.use_cases.log.integrate()
    with pytest.raises(grpc.RpcError) as caught:
        watch(plain_channel(server), cursor)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


def test_resuming_from_a_cursor_after_a_restart_loses_and_repeats_nothing(servers, partner):
    server = servers.plain()
    claims = history(server, partner)
    everything = watch(plain_channel(server))
    expected_shape(everything, claims)
    # The partner read two events, then the service restarted.
    stream = usage_stub(plain_channel(server)).WatchCertificateUsage(upb.WatchCertificateUsageRequest(), timeout=20)
    read = [next(stream), next(stream)]
    stream.cancel()
    cursor = read[-1].cursor
    servers.stop(server)

    restarted = servers.plain()
    # A claim recorded after the restart comes after what the partner had not read yet.
    match = match_pb2_grpc.MatchServiceStub(plain_channel(restarted))
    later = match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(4))).result
    restarted.use_cases.log.integrate()
    rest = watch(plain_channel(restarted), cursor)
    assert [e.log_index for e in read + rest] == [e.log_index for e in everything] + [rest[-1].log_index]
    assert [e.entry for e in read + rest[:-1]] == [e.entry for e in everything]
    assert (rest[-1].kind, rest[-1].claim_id) == ("DECISION", later.claim_id)
    # From the last event's cursor: nothing more.
    assert watch(plain_channel(restarted), rest[-1].cursor) == []


def test_follow_delivers_a_new_claims_event_live(servers, partner):
    server = servers.plain()
    history(server, partner)
    replica = servers.secure()
    stream = usage_stub(channel_as(servers.pki, "gateway-mx", replica.port)).WatchCertificateUsage(
        upb.WatchCertificateUsageRequest(follow=True), timeout=30)
    try:
        seen = [next(stream) for _ in range(4)]
        match = match_pb2_grpc.MatchServiceStub(plain_channel(server))
        later = match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(5))).result
        server.use_cases.log.integrate()
        live = next(stream)
    finally:
        stream.cancel()
    assert (live.kind, live.claim_id, live.certificate_number) == ("DECISION", later.claim_id, "MX26-00000001")
    assert live.log_index > seen[-1].log_index


def test_ecert_usage_watch_prints_each_event_and_the_cursor_to_resume_from(servers, partner):
    server = servers.plain()
    history(server, partner)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECERT_")}
    env.update(ECERT_TARGET=f"127.0.0.1:{server.port}", ECERT_INSECURE="1", COLUMNS="200", NO_COLOR="1")

    def ecert(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "client.cli", *args], capture_output=True, text=True, env=env, timeout=60)

    as_json = ecert("usage", "watch", "--json")
    assert as_json.returncode == 0, as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [e["kind"] for e in events] == ["DECISION", "DECISION", "DECISION", "REVERSAL"]
    assert f"--since {events[-1]['cursor']}" in as_json.stderr
    text = ecert("usage", "watch", "--since", events[1]["cursor"])
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [events[2]["cursor"], events[3]["cursor"]]
    assert "MX/MX26-00000001@1" in lines[0] and "REVERSAL" in lines[1]
    bad = ecert("usage", "watch", "--since", "soon")
    assert bad.returncode == 1 and "CURSOR_MALFORMED" in bad.stderr


def test_following_streams_count_against_the_watch_limits_and_end_at_the_maximum_duration(servers, clock):
    servers.settings = dataclasses.replace(servers.settings, workers=16, reserved_watches=1, watches_per_identity=2, max_watch_seconds=600)
    replica = servers.secure()
    held = lambda: len(replica.use_cases.events._subscribers)  # noqa: E731
    follow = upb.WatchCertificateUsageRequest(follow=True)
    streams = [usage_stub(channel_as(servers.pki, "gateway-mx", replica.port)).WatchCertificateUsage(follow, timeout=30) for _ in range(2)]
    try:
        assert wait_until(lambda: held() == 2)
        with pytest.raises(grpc.RpcError) as caught:
            list(usage_stub(channel_as(servers.pki, "gateway-mx", replica.port)).WatchCertificateUsage(follow, timeout=10))
        assert (rich_error(caught.value).code, rich_error(caught.value).reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                                                     "TOO_MANY_WATCHES_FOR_CALLER")
        # Idle follows hold no worker: other calls are served meanwhile.
        assert watch(channel_as(servers.pki, "customs", replica.port)) == []
        clock.advance(seconds=600)
        for stream in streams:
            assert list(stream) == [] and stream.code() == grpc.StatusCode.OK
            assert dict(stream.trailing_metadata())[WATCH_ENDED_KEY] == WATCH_ENDED_MAX_DURATION
        assert wait_until(lambda: held() == 0)
    finally:
        for stream in streams:
            stream.cancel()


def wait_until(condition, seconds: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
