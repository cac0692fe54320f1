"""The SDK's claim and quota calls against a real server: typed decisions, reversals, usage, quota."""
from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from google.protobuf import json_format

from client.sdk import (
    AlreadyExists,
    Certificate,
    ClaimDecision,
    CustomsClient,
    EntryLine,
    ImporterClient,
    InvalidArgument,
    NotFound,
    PartnerClient,
    QuotaEventKind,
    QuotaState,
)
from contract.entry_number import make_entry_number
from tests.factories import certificate, claim_line, small_levels

PRESENTED = [dt.datetime.now(dt.timezone.utc)]  # set by the `customs` fixture once its certificate is on file


def line(transaction: int = 1, **changes: object) -> EntryLine:
    """A line presented when the test's certificate had been sent (these servers run on the system
    clock): the same instants on every call, so filing it again replays."""
    now = PRESENTED[0]
    times: dict[str, object] = dict(filed_at=now - dt.timedelta(hours=2), arrived_at=now - dt.timedelta(hours=1), paid_at=now)
    return EntryLine.from_dict(json_format.MessageToDict(claim_line(transaction, **{**times, **changes}), preserving_proto_field_name=True))


@pytest.fixture
def customs(server, partner):  # type: ignore[no-untyped-def]
    """TPL 1 limited to 1000 SME, the default certificate (1200 dozen) on file, and a customs client."""
    server.use_cases.references.load(small_levels("sdk-test", {"9823.53.01": "1000"}))
    target = f"127.0.0.1:{server.port}"
    with PartnerClient(partner.signer, "MX", target=target, insecure=True) as mx:
        mx.transmit(Certificate.from_proto(certificate()))
    PRESENTED[0] = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=1)
    with CustomsClient(target=target, insecure=True) as client:
        yield client


def test_match_check_get_and_reverse(customs):
    dry = customs.check_claim(line())
    assert dry.decision is ClaimDecision.PREFERENTIAL and dry.claim_id == ""
    outcome = customs.match_claim(line())
    result = outcome.result
    assert not outcome.replayed and result.decision is ClaimDecision.PREFERENTIAL
    assert (result.granted_quantity, result.unit, result.granted_measure, result.measure_unit) == (Decimal(100), "DOZ", Decimal(600), "SME")
    assert result.level_remaining == Decimal(400) and result.certificate_remaining == Decimal(1100)
    assert result.presentation_time is not None and result.presentation_time.tzinfo is not None
    assert customs.match_claim(line()).replayed

    usage = customs.certificate_usage("MX", "MX26-00000001")
    assert (usage.used_quantity, usage.remaining_quantity) == (Decimal(100), Decimal(1100))
    assert [(u.entry_number, u.granted_quantity) for u in usage.uses] == [(result.entry_number, Decimal(100))]

    reversal = customs.reverse_claim(result.entry_number, 1, reason="entry canceled")
    assert reversal.reversed.reversed and reversal.corrected is None
    assert customs.get_claim(result.entry_number, 1).reversed
    assert customs.quota_status("9823.53.01").charged == Decimal(0)


def test_corrected_line_is_decided_again(customs):
    first = customs.match_claim(line()).result
    reversal = customs.reverse_claim(first.entry_number, 1, corrected_line=line(quantity="50"))
    assert reversal.corrected is not None and reversal.corrected.granted_quantity == Decimal(50)
    assert reversal.corrected.presentation_time == first.presentation_time  # priority kept


def test_claim_errors_are_typed(customs):
    with pytest.raises(InvalidArgument) as caught:
        customs.match_claim(line(entry_number="B76-0000001-0"))
    assert any(v.reason == "ENTRY_NUMBER_CHECK_DIGIT" and v.field.endswith("entry_number") for v in caught.value.field_violations)
    customs.match_claim(line())
    with pytest.raises(AlreadyExists) as caught:
        customs.match_claim(line(quantity="50"))
    assert caught.value.reason == "CLAIM_ALREADY_DECIDED"
    with pytest.raises(NotFound):
        customs.get_claim(make_entry_number("B76", 9), 1)


def test_quota_reads_and_watch(server, customs):
    levels = {q.tpl_number: q for q in customs.list_quotas()}
    assert levels["9823.53.01"].limit == Decimal(1000) and levels["9823.53.01"].state is QuotaState.OPEN
    customs.match_claim(line(quantity="150"))  # 900 SME of 1000: critical
    tpl1 = customs.quota_status("9823.53.01")
    assert (tpl1.charged, tpl1.fill_share, tpl1.state) == (Decimal(900), Decimal("0.9"), QuotaState.CRITICAL)
    past = customs.quota_status("9823.53.01", as_of=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=300))
    assert past.charged == Decimal(0)
    with ImporterClient(target=f"127.0.0.1:{server.port}", insecure=True) as broker:
        events = broker.watch_quotas(("9823.53.01",))
        snapshot = next(events)
        assert snapshot.kind is QuotaEventKind.SNAPSHOT and snapshot.status.state is QuotaState.CRITICAL
        waiting = customs.match_claim(line(2, quantity="20")).result  # would pass 90%: waits for the cutoff batch
        changes = list(itertools.islice(events, 1))
        events.close()
    assert waiting.decision is ClaimDecision.PENDING and waiting.reasons == ["LEVEL_ON_HOLD"]
    assert (changes[0].kind, changes[0].status.state, changes[0].status.charged) == (QuotaEventKind.ON_HOLD, QuotaState.ON_HOLD, Decimal(900))
    assert changes[0].status.held_since is not None and changes[0].status.next_batch_at is not None
