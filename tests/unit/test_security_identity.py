"""Identities from certificate URIs, and the role table's lookups: pure rules."""
from __future__ import annotations

import pytest

from contract.identity import Identity, Role, identity_from_uris
from ecert.v1 import transmission_pb2 as tpb
from server.api.auth import POLICY, rule_for
from server.domain.errors import DomainError


def test_uris_round_trip():
    identity = Identity("relay", Role.RELAY, frozenset({"MX", "GT"}))
    assert identity_from_uris("relay", identity.to_uris()) == identity


def test_importer_numbers_and_foreign_uris():
    identity = identity_from_uris("broker", ["https://example.test/x", "urn:ecert:role:importer", "urn:ecert:importer:12-345678900"])
    assert identity.role is Role.IMPORTER and identity.importers == {"12-345678900"}


@pytest.mark.parametrize("uris", [[], ["urn:ecert:role:superuser"], ["urn:ecert:role:customs", "urn:ecert:role:admin"], ["urn:ecert:role:"]])
def test_missing_unknown_or_ambiguous_roles_grant_nothing(uris):
    assert identity_from_uris("x", uris).role is None


def test_whole_service_rows_cover_methods_added_later():
    assert rule_for("/ecert.v1.QuotaService/GetQuotaStatus") is POLICY["/ecert.v1.QuotaService/*"]
    assert rule_for("/ecert.v1.Unknown/Anything") is None


def test_scope_runs_for_partners_only():
    rule = rule_for("/ecert.v1.TransmissionService/GetCertificate")
    assert rule is not None
    request = tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-00000001")
    rule.check(Identity("customs", Role.CUSTOMS), request, "m")  # customs reads any country
    rule.check(Identity("mx", Role.PARTNER, frozenset({"MX"})), request, "m")
    with pytest.raises(DomainError) as caught:
        rule.check(Identity("gt", Role.PARTNER, frozenset({"GT"})), request, "m")
    assert caught.value.reason == "COUNTRY_NOT_CALLERS"


def test_every_role_reads_the_transparency_log_and_only_a_witness_cosigns():
    from ecert.v1 import log_pb2 as lpb

    read = rule_for("/ecert.v1.LogService/GetInclusionProof")
    cosign = rule_for("/ecert.v1.LogService/AddCosignature")
    assert read is not None and cosign is not None
    for role in Role:
        read.check(Identity(role.value, role, frozenset({"MX"})), lpb.GetInclusionProofRequest(leaf_index=0), "m")
        if role is Role.WITNESS:
            cosign.check(Identity("w", role), lpb.AddCosignatureRequest(), "m")
            continue
        with pytest.raises(DomainError) as caught:
            cosign.check(Identity(role.value, role), lpb.AddCosignatureRequest(), "m")
        assert caught.value.reason == "ROLE_NOT_ALLOWED"
    assert identity_from_uris("mx-witness", ["urn:ecert:role:witness", "urn:ecert:country:MX"]).role is Role.WITNESS
