"""MatchService converts by the category of the claim's 10-digit HTSUS line (issue 13, item 7), on
SQLite and PostgreSQL. Categories: the HTSUS (USITC data mirrored in tariffboard/htsdata@978a6ff9)
prints 6110.20.20.10 "Men's (345)" under "Sweaters:" and 6115.95.90.00 "Other (332)" in dozen pairs;
the 30.8 SME per dozen of category 345 is the illustrative figure of issue 13 ("sweaters (30.8)")."""
from __future__ import annotations

import json

import grpc
import pytest

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import transmission_pb2 as tpb
from tests.factories import certificate, claim_line, envelope
from tests.grpc_errors import rich_error
from tests.integration.test_claims_api import claim, snapshot

VERSION = "sme-statistical-lines-2026.1"


@pytest.fixture
def transmit(transmission, partner, clock):  # type: ignore[no-untyped-def]
    sent = [0]

    def send(cert):  # type: ignore[no-untyped-def]
        sent[0] += 1
        env = envelope(partner.signer, cert, message_id=f"sme-{sent[0]}", sent_at=clock.at)
        response = transmission.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=env))
        assert response.receipt.receipt_id
        return response

    return send


def test_sweaters_are_charged_at_their_category_factor_not_the_knit_shirt_one(match, transmit):
    transmit(certificate(htsus_number="6110.20.2010", goods_description="Men's cotton sweaters"))
    result = claim(match, claim_line(htsus_number="6110.20.2010"))
    assert result.decision == mpb.CLAIM_DECISION_PREFERENTIAL
    assert (result.claimed_quantity, result.conversion_factor, result.claimed_measure) == ("100", "30.8", "3080")
    assert result.factor_version == VERSION


@pytest.mark.parametrize(("certified", "claimed", "unit", "cause", "category"), [
    ("6201.30.1000", "6201.30.1000", "DOZ", "NO_CATEGORY_FOR_LINE", None),  # a line the table does not list
    ("6110.20.20", "6110.20.20", "DOZ", "NOT_A_STATISTICAL_LINE", None),  # a subheading, not a statistical line
    ("6115.95.9000", "6115.95.9000", "DPR", "NO_FACTOR_FOR_CATEGORY", "332"),  # hosiery, counted in dozen pairs
])
def test_a_line_that_cannot_be_converted_is_refused_and_nothing_is_written(
    match, transmit, server, certified, claimed, unit, cause, category
):  # type: ignore[no-untyped-def]
    transmit(certificate(htsus_number=certified, unit=unit))
    before = snapshot(server)
    with pytest.raises(grpc.RpcError) as caught:
        claim(match, claim_line(htsus_number=claimed, unit=unit))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONVERSION_FACTOR_MISSING")
    assert (error.metadata["cause"], error.metadata["factor_version"]) == (cause, VERSION)
    assert error.metadata.get("category") == category
    assert snapshot(server) == before


def test_a_database_left_with_a_heading_level_table_gets_the_packaged_one(tmp_path, database_url, clock):  # type: ignore[no-untyped-def]
    """An upgrade: the newest stored conversion table is in the retired heading form, which this code
    cannot read; the service starts with the packaged table by statistical line, the old one kept."""
    from server.adapters.database import Database
    from server.service.reference import ReferenceStore
    from server.service.unit_of_work import UnitOfWork

    database = Database(database_url or f"sqlite:///{tmp_path / 'upgrade.db'}")
    database.upgrade()
    legacy = {"kind": "conversion", "version": "otexa-pre-usmca-illustrative-1", "source": "heading-level seed",
              "categories": {"338": {"description": "knit shirts", "unit": "DOZ", "factor": "6.0"}},
              "htsus_prefixes": {"6110": "338"}}
    try:
        with UnitOfWork(database, write=True) as uow:
            uow.references.add("conversion", legacy["version"], legacy["source"], json.dumps(legacy), "legacy", clock.at)
            uow.commit()
        store = ReferenceStore(database, clock)
        store.ensure_defaults()
        assert store.current().conversion.version == VERSION
        assert [(kind, version) for _, kind, version, *_ in store.history() if kind == "conversion"] == [
            ("conversion", "otexa-pre-usmca-illustrative-1"), ("conversion", VERSION)]
    finally:
        database.dispose()
