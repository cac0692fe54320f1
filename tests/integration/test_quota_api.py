"""QuotaService: status now and in the past, states, and the WatchQuotas stream."""
from __future__ import annotations

import datetime as dt
import queue
import threading

import grpc
import pytest

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import transmission_pb2 as tpb
from tests.factories import claim_line, envelope, run_cutoff_batch, small_levels, stamp
from tests.grpc_errors import rich_error


@pytest.fixture
def small(server, transmission, partner, clock):  # type: ignore[no-untyped-def]
    """TPL 1 limited to 1000 SME in 2026, and the default certificate on file."""
    server.use_cases.references.load(small_levels("quota-test", {"9823.53.01": "1000"}))
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, sent_at=clock.at)))


def claim(match, n, quantity, clock=None):  # type: ignore[no-untyped-def]
    """Line n, presented now by `clock` (else at the factory's NOW)."""
    times = {"paid_at": clock.at} if clock is not None else {}
    return match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(n, quantity=quantity, **times))).result


def test_list_quotas_shows_every_level_of_the_year(quota):
    levels = quota.ListQuotas(qpb.ListQuotasRequest(quota_year=2026)).quotas
    assert [(q.label, q.limit, q.measure_unit) for q in levels] == [
        ("TPL 1", "45000000", "SME"), ("TPL 2", "1500000", "SME"), ("TPL 3", "22800000", "SME"),
        ("TPL 4", "4800000", "SME"), ("TPL 5", "18000000", "SME"), ("TPL 6", "700000", "KG"),
    ]
    assert all(q.state == qpb.QUOTA_STATE_OPEN and q.period_start == "2026-01-01" for q in levels)
    assert [q.aggregate_tpl_number for q in levels][3:5] == ["9823.53.03", "9823.53.03"]
    assert quota.ListQuotas(qpb.ListQuotasRequest()).quotas[0].quota_year == 2026  # the current year by default


def test_states_follow_the_fill_and_the_past_can_be_read(quota, match, server, clock, small):
    status = lambda **kw: quota.GetQuotaStatus(qpb.GetQuotaStatusRequest(tpl_number="9823.53.01", quota_year=2026, **kw)).status  # noqa: E731
    before_any = clock.at
    clock.advance(minutes=1)
    claim(match, 1, "140", clock)  # 840 SME: 84% of 1000
    assert (status().state, status().fill_share) == (qpb.QUOTA_STATE_OPEN, "0.84")
    after_first = clock.at
    clock.advance(minutes=1)
    claim(match, 2, "10", clock)  # 900 SME: critical at 90%
    assert status().state == qpb.QUOTA_STATE_CRITICAL
    before_hold = clock.at
    clock.advance(minutes=1)
    assert claim(match, 3, "20", clock).decision == mpb.CLAIM_DECISION_PENDING  # would pass 90%: on hold
    clock.advance(minutes=1)
    assert claim(match, 4, "1", clock).decision == mpb.CLAIM_DECISION_PENDING
    assert (status().state, status().charged) == (qpb.QUOTA_STATE_ON_HOLD, "900")
    assert status().held_since.ToDatetime(tzinfo=dt.timezone.utc) == before_hold + dt.timedelta(minutes=1)
    run_cutoff_batch(server, clock)  # line 3 cut to 16 dozen: 996 SME; line 4 MFN (4 SME, less than a dozen)
    assert status().charged == "996"
    assert status(as_of=stamp(before_any)).charged == "0"
    assert status(as_of=stamp(after_first)).charged == "840"
    assert status(as_of=stamp(after_first)).state == qpb.QUOTA_STATE_OPEN
    assert status(as_of=stamp(before_hold)).state == qpb.QUOTA_STATE_CRITICAL  # not yet on hold then


def test_a_remainder_below_one_unit_leaves_the_level_on_hold_not_filled(quota, match, server, clock, small):
    claim(match, 1, "150")
    assert claim(match, 2, "16").decision == mpb.CLAIM_DECISION_PENDING  # 900 + 96 would pass 90%
    run_cutoff_batch(server, clock)
    status = quota.GetQuotaStatus(qpb.GetQuotaStatusRequest(tpl_number="9823.53.01", quota_year=2026)).status
    assert (status.state, status.charged) == (qpb.QUOTA_STATE_ON_HOLD, "996")  # 4 SME remain: on hold, not filled
    claim(match, 3, "10", clock)
    run_cutoff_batch(server, clock)  # cut to nothing: MFN
    assert quota.GetQuotaStatus(qpb.GetQuotaStatusRequest(tpl_number="9823.53.01")).status.remaining == "4"


def test_quota_errors(quota, clock):
    with pytest.raises(grpc.RpcError) as caught:
        quota.GetQuotaStatus(qpb.GetQuotaStatusRequest(tpl_number="9823.99.99", quota_year=2026))
    assert (caught.value.code(), rich_error(caught.value).reason) == (grpc.StatusCode.NOT_FOUND, "QUOTA_NOT_FOUND")
    with pytest.raises(grpc.RpcError) as caught:
        quota.GetQuotaStatus(qpb.GetQuotaStatusRequest(quota_year=2026))
    assert rich_error(caught.value).fields == {"tpl_number": "FIELD_REQUIRED"}
    with pytest.raises(grpc.RpcError) as caught:
        quota.GetQuotaStatus(qpb.GetQuotaStatusRequest(tpl_number="9823.53.01", as_of=stamp(clock.at + dt.timedelta(days=1))))
    assert rich_error(caught.value).fields == {"as_of": "AS_OF_IN_FUTURE"}


def test_watch_pushes_critical_filled_and_reopened(quota, match, server, transmission, partner, clock):
    server.use_cases.references.load(small_levels("watch", {"9823.53.01": "600"}))
    transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, sent_at=clock.at)))
    server.use_cases.events.max_duration = None  # the clock jumps to the evening's cutoff: keep the watch open
    stream = quota.WatchQuotas(qpb.WatchQuotasRequest(tpl_numbers=["9823.53.01"], quota_year=2026))
    events: queue.Queue = queue.Queue()
    def read() -> None:
        try:
            for event in stream:
                events.put(event)
        except grpc.RpcError as error:  # the test cancels the stream when it is done
            assert error.code() == grpc.StatusCode.CANCELLED

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def next_event():  # type: ignore[no-untyped-def]
        return events.get(timeout=10)

    snapshot = next_event()
    assert snapshot.kind == qpb.QUOTA_EVENT_KIND_SNAPSHOT and snapshot.status.charged == "0"
    claim(match, 1, "90")  # 540 of 600: 90%
    critical = next_event()
    assert (critical.kind, critical.status.state, critical.status.charged) == (
        qpb.QUOTA_EVENT_KIND_BECAME_CRITICAL, qpb.QUOTA_STATE_CRITICAL, "540")
    filled_by = claim(match, 2, "10")  # would pass 90%: waits for the cutoff batch
    held = next_event()
    assert (held.kind, held.status.state, held.status.charged) == (qpb.QUOTA_EVENT_KIND_ON_HOLD, qpb.QUOTA_STATE_ON_HOLD, "540")
    assert held.status.HasField("next_batch_at")
    run_cutoff_batch(server, clock)
    filled = next_event()
    assert (filled.kind, filled.status.remaining) == (qpb.QUOTA_EVENT_KIND_FILLED, "0")
    match.ReverseClaim(mpb.ReverseClaimRequest(entry_number=filled_by.entry_number, line_number=1, kind=mpb.REVERSAL_KIND_CANCELED))
    reopened = next_event()
    assert (reopened.kind, reopened.status.state) == (qpb.QUOTA_EVENT_KIND_REOPENED, qpb.QUOTA_STATE_ON_HOLD)
    run_cutoff_batch(server, clock)  # nothing waits and 540 is within 90%: the hold is lifted
    lifted = next_event()
    assert (lifted.kind, lifted.status.state) == (qpb.QUOTA_EVENT_KIND_REOPENED, qpb.QUOTA_STATE_CRITICAL)
    stream.cancel()


def test_watches_are_capped_so_they_cannot_starve_the_workers(quota, server):
    cap = server.use_cases.events.max_watchers
    streams = [quota.WatchQuotas(qpb.WatchQuotasRequest(quota_year=2026)) for _ in range(cap)]
    for stream in streams:
        assert next(stream).kind == qpb.QUOTA_EVENT_KIND_SNAPSHOT
    with pytest.raises(grpc.RpcError) as caught:
        next(quota.WatchQuotas(qpb.WatchQuotasRequest(quota_year=2026)))
    assert (caught.value.code(), rich_error(caught.value).reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_WATCHERS")
    for stream in streams:
        stream.cancel()
    # A closed watch frees its place.
    for _ in range(50):
        if not server.use_cases.events._subscribers:
            break
        __import__("time").sleep(0.1)
    assert next(quota.WatchQuotas(qpb.WatchQuotasRequest(quota_year=2026))).kind == qpb.QUOTA_EVENT_KIND_SNAPSHOT
