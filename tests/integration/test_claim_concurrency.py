"""Many simultaneous claims at one nearly-full level, through the real gRPC server."""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import grpc

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import transmission_pb2 as tpb
from tests.factories import certificate, claim_line, envelope, small_levels

CLAIMS = 240


def test_simultaneous_claims_fill_the_level_exactly_and_never_exceed_it(server, transmission, quota, partner):
    # TPL 4 counts in SME and certificates in M2 convert one to one: 1000 M2 left, claims of 7 M2,
    # so 142 claims fit whole, one is cut to 6 and the rest pay MFN.
    server.use_cases.references.load(small_levels("concurrency", {"9823.53.04": "1000", "9823.53.03": "100000"}))
    fabric = {"tpl_number": "9823.53.04", "htsus_number": "5208.12.4020", "unit": "M2", "goods_description": "Woven fabric"}
    for n in range(4):  # four certificates of 500 M2 each: 2000 M2 of certificates for a 1000 M2 level
        cert = certificate(f"MX26-0000010{n}", quantity="500", **fabric)
        transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer, cert, message_id=f"c-{n}")))

    def file(n: int) -> mpb.ClaimResult:
        line = claim_line(1000 + n, certificate_number=f"MX26-0000010{n % 4}", quantity="7",
                          tpl_number="9823.53.04", htsus_number="5208.12.4020", unit="M2")
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            return match_pb2_grpc.MatchServiceStub(channel).MatchClaim(mpb.MatchClaimRequest(line=line)).result

    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(file, range(CLAIMS)))

    decisions = Counter(mpb.ClaimDecision.Name(r.decision) for r in results)
    assert decisions == {"CLAIM_DECISION_PREFERENTIAL": 142, "CLAIM_DECISION_PARTIAL": 1, "CLAIM_DECISION_MFN_REQUIRED": CLAIMS - 143}
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
