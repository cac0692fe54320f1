"""Many concurrent claims at one nearly-full level, through the real gRPC server."""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import grpc

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import transmission_pb2 as tpb
import datetime as dt

from tests.factories import NOW, certificate, claim_line, envelope, run_cutoff_batch, small_levels

CLAIMS = 240


def test_concurrent_claims_fill_the_level_exactly_and_never_exceed_it(server, transmission, quota, partner, clock):
    # TPL 4 counts in SME and certificates in M2 convert one to one: 1000 M2 left, claims of 7 M2 each
    # presented a second apart. Up to the critical share (900) they are decided at once, whatever order
    # they arrive in (128 claims, 896); the rest wait (PENDING) for the cutoff batch, which decides them
    # in presentation order (19 CFR 132.11): 14 more fit whole, the next is cut to 6, the rest pay MFN.
    server.use_cases.references.load(small_levels("concurrency", {"9823.53.04": "1000", "9823.53.03": "100000"}))
    fabric = {"tpl_number": "9823.53.04", "htsus_number": "5208.12.4020", "unit": "M2", "goods_description": "Woven fabric"}
    for n in range(4):  # four certificates of 500 M2 each: 2000 M2 of certificates for a 1000 M2 level
        cert = certificate(f"MX26-0000010{n}", quantity="500", **fabric)
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, cert, message_id=f"c-{n}")))

    clock.advance(hours=1)

    def file(n: int) -> mpb.ClaimResult:
        line = claim_line(1000 + n, certificate_number=f"MX26-0000010{n % 4}", quantity="7", paid_at=NOW + dt.timedelta(seconds=n),
                          tpl_number="9823.53.04", htsus_number="5208.12.4020", unit="M2")
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            return match_pb2_grpc.MatchServiceStub(channel).MatchClaim(mpb.MatchClaimRequest(line=line)).result

    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(file, range(CLAIMS)))

    decisions = Counter(mpb.ClaimDecision.Name(r.decision) for r in results)
    assert decisions == {"CLAIM_DECISION_PREFERENTIAL": 128, "CLAIM_DECISION_PENDING": CLAIMS - 128}
    pending = sorted((r for r in results if r.decision == mpb.CLAIM_DECISION_PENDING), key=lambda r: r.presentation_time.ToDatetime())
    status = quota.GetQuotaStatus(qpb.GetQuotaStatusRequest(tpl_number="9823.53.04", quota_year=2026)).status
    assert (status.charged, status.state) == ("896", qpb.QUOTA_STATE_ON_HOLD) and status.HasField("next_batch_at")

    cutoff = run_cutoff_batch(server, clock)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        decided = [stub.GetClaim(mpb.GetClaimRequest(entry_number=r.entry_number, line_number=1)).result for r in pending]
    # In presentation order: 14 whole, one cut, the rest nothing; each says which batch decided it.
    assert [mpb.ClaimDecision.Name(r.decision)[15:] for r in decided] == ["PREFERENTIAL"] * 14 + ["PARTIAL"] + ["MFN_REQUIRED"] * (CLAIMS - 143)
    assert decided[14].granted_quantity == "6" and list(decided[15].reasons) == ["LEVEL_FILLED"]
    assert {r.batch_cutoff.ToDatetime(tzinfo=dt.timezone.utc) for r in decided} == {cutoff}
    results = [r for r in results if r.decision != mpb.CLAIM_DECISION_PENDING] + decided
    granted = sum(Decimal(r.granted_measure) for r in results)
    status = quota.GetQuotaStatus(qpb.GetQuotaStatusRequest(tpl_number="9823.53.04", quota_year=2026)).status
    assert granted == Decimal(status.charged) == Decimal(1000)
    assert status.state == qpb.QUOTA_STATE_FILLED and status.remaining == "0"
    # Every claim has exactly one decision on record; certificates were charged exactly what was granted.
    assert len({r.claim_id for r in results}) == CLAIMS
    used = 0
    for n in range(4):
        usage = match_pb2_grpc.MatchServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}")).GetCertificateUsage(
            mpb.GetCertificateUsageRequest(issuing_country="MX", certificate_number=f"MX26-0000010{n}"))
        assert Decimal(usage.remaining_quantity) >= 0
        used += Decimal(usage.used_quantity)
    assert used == granted
