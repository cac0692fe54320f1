"""Page tokens are keyed from the receipt-signing key that replicas share: a list started on one replica
continues on another, and a token forged with any other key is refused by both."""
from __future__ import annotations

import grpc
import pytest

from ecert.v1 import transmission_pb2 as tpb
from server.service.pagination import PageTokens
from tests.grpc_errors import rich_error
from tests.processes import Deployment, envelope_now, replicas, stub, todays_certificate

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_a_page_token_from_one_replica_continues_on_another(deployment: Deployment):
    numbers = [f"MX26-{n:08d}" for n in range(1, 6)]
    with replicas(deployment, 2) as services:
        (_, first), (_, second) = (stub(s.target) for s in services)
        for n, number in enumerate(numbers):
            env = envelope_now(deployment.partner, todays_certificate(number), message_id=f"page-{n}")
            first.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env), timeout=10)
        seen, token, turn = [], "", 0
        while True:
            page = (first, second)[turn % 2].ListCertificates(
                tpb.ListCertificatesRequest(issuing_country="MX", page_size=2, page_token=token), timeout=10
            )
            seen += [c.certificate.certificate_number for c in page.certificates]
            token, turn = page.next_page_token, turn + 1
            if not token:
                break
        assert seen == numbers and turn == 3

        filters = {"country": "MX", "status": "", "year": 0, "tpl": ""}
        forged = PageTokens(b"not the service's key, 32 bytes.").encode("MX26-00000002", filters)
        for replica in (first, second):
            with pytest.raises(grpc.RpcError) as caught:
                replica.ListCertificates(tpb.ListCertificatesRequest(issuing_country="MX", page_token=forged), timeout=10)
            error = rich_error(caught.value)
            assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")
