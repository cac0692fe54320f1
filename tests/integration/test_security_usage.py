"""Roles on MatchService and QuotaService: whose usage an importer may see, who files claims."""
from __future__ import annotations

import datetime as dt

import grpc
import pytest

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import quota_pb2_grpc
from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import transmission_pb2_grpc
from tests.factories import envelope
from tests.grpc_errors import rich_error
from tests.integration.test_security import refused
from tests.tls_fixtures import channel_as, pki, secure_server  # noqa: F401  (fixtures)

USAGE = mpb.GetCertificateUsageRequest(issuing_country="MX", certificate_number="MX26-00000001")


@pytest.fixture
def certified(pki, secure_server) -> None:
    """One certificate on file, naming importer 12-345678900 (the PKI's importer)."""
    stub = transmission_pb2_grpc.TransmissionServiceStub(channel_as(pki, "gateway-mx", secure_server.port))
    env = envelope(pki.layout.document_signer(), sent_at=dt.datetime.now(dt.timezone.utc))
    stub.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env), timeout=10)


def usage_as(pki, party: str, server):  # type: ignore[no-untyped-def]
    return match_pb2_grpc.MatchServiceStub(channel_as(pki, party, server.port))


@pytest.mark.parametrize("party", ["importer", "gateway-mx", "customs"])
def test_the_importer_named_its_partner_and_customs_see_a_certificates_usage(pki, secure_server, certified, party):
    usage = usage_as(pki, party, secure_server).GetCertificateUsage(USAGE, timeout=5)
    assert (usage.certificate_number, usage.importer_of_record) == ("MX26-00000001", "12-345678900")


def test_another_importer_may_not_see_the_usage(pki, secure_server, certified):
    error = rich_error(refused(secure_server, lambda: usage_as(pki, "importer-other", secure_server).GetCertificateUsage(USAGE, timeout=5)))
    # As if the number did not exist (tests/integration/test_hostile_callers.py compares the two).
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "CERTIFICATE_NOT_FOUND")


def test_another_partner_may_not_see_the_usage(pki, secure_server, certified):
    error = rich_error(refused(secure_server, lambda: usage_as(pki, "partner-gt", secure_server).GetCertificateUsage(USAGE, timeout=5)))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "COUNTRY_NOT_CALLERS")


@pytest.mark.parametrize("party", ["importer", "gateway-mx", "relay"])
def test_only_customs_files_claims(pki, secure_server, certified, party):
    line = mpb.EntrySummaryLine(entry_number="B7Q-0001001-6", line_number=1, certificate_number="MX26-00000001")
    error = rich_error(refused(secure_server, lambda: usage_as(pki, party, secure_server).MatchClaim(mpb.MatchClaimRequest(line=line), timeout=5)))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")


@pytest.mark.parametrize("party", ["importer", "gateway-mx", "customs", "admin"])
def test_every_authenticated_party_reads_quota_status(pki, secure_server, party):
    stub = quota_pb2_grpc.QuotaServiceStub(channel_as(pki, party, secure_server.port))
    quotas = stub.ListQuotas(qpb.ListQuotasRequest(quota_year=dt.date.today().year), timeout=5).quotas
    assert "9823.53.01" in {q.tpl_number for q in quotas}
