"""Builders for test data: a valid certificate, signed envelopes, partner keys."""
from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.envelope import seal
from contract.signing import Signer
from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import transmission_pb2 as tpb

NOW = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.timezone.utc)
CREATE = tpb.TRANSMISSION_ACTION_CREATE
REPLACE = tpb.TRANSMISSION_ACTION_REPLACE
CANCEL = tpb.TRANSMISSION_ACTION_CANCEL


def new_signer(key_id: str = "mx-se-2026-1") -> Signer:
    return Signer(key_id, Ed25519PrivateKey.generate())


def certificate(number: str = "MX26-00000001", **changes: object) -> cpb.Certificate:
    message = cpb.Certificate(
        certificate_number=number,
        issuing_country="MX",
        tpl_number="9823.53.01",
        htsus_number="6109.10.0012",
        goods_description="Men's knit cotton T-shirts",
        quantity="1200",
        unit="DOZ",
        importer_of_record="12-345678900",
        exporter=cpb.Party(name="Textiles del Norte SA de CV", address="Av. Juárez 100, Monterrey, NL", tax_id="TNO010101AAA"),
        producer=cpb.Party(name="Confecciones Bajío SA de CV", address="Calle 5 de Mayo 22, León, Gto.", tax_id="CBA020202BBB"),
        quota_year=2026,
        issue_date="2026-02-20",
        last_valid_date="2026-12-31",
        invoice_number="INV-2026-0042",
    )
    for name, value in changes.items():
        if isinstance(value, cpb.Party):
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def envelope(
    signer: Signer,
    cert: cpb.Certificate | None = None,
    *,
    message_id: str = "msg-0001",
    action: int = CREATE,
    replaces_version: int = 0,
    sent_at: dt.datetime = NOW,
    sender: str = "MX",
) -> tpb.SignedEnvelope:
    unsigned = tpb.SignedEnvelope(
        message_id=message_id,
        sender=sender,
        action=action,
        certificate=cert if cert is not None else certificate(),
        replaces_version=replaces_version,
    )
    return seal(unsigned, signer, sent_at=sent_at)


# -- claims -----------------------------------------------------------------------------------------

from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

from contract.entry_number import make_entry_number  # noqa: E402
from ecert.v1 import match_pb2 as mpb  # noqa: E402


def stamp(at: dt.datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(at)
    return value


def claim_line(
    transaction: int = 1,
    *,
    line_number: int = 1,
    filer: str = "B76",
    certificate_number: str = "MX26-00000001",
    # Presented (paid) at NOW, when the test server's clock stands and certificates are received: a
    # claim counts only a transmission on file at its presentation time (eCERT notice).
    filed_at: dt.datetime = NOW - dt.timedelta(hours=2),
    arrived_at: dt.datetime | None = NOW - dt.timedelta(hours=1),
    paid_at: dt.datetime | None = NOW,
    **changes: object,
) -> mpb.EntrySummaryLine:
    """An entry summary line that matches `certificate()`: 100 dozen knit shirts under TPL 1."""
    message = mpb.EntrySummaryLine(
        entry_number=make_entry_number(filer, transaction),
        line_number=line_number,
        filer_code=filer,
        importer_of_record="12-345678900",
        entry_type="02",
        country_of_origin="MX",
        htsus_number="6109.10.0012",
        tpl_number="9823.53.01",
        spi="S+",
        certificate_number=certificate_number,
        quantity="100",
        unit="DOZ",
        date_of_importation="2026-03-01",
    )
    message.filed_at.CopyFrom(stamp(filed_at))
    if arrived_at is not None:
        message.arrived_at.CopyFrom(stamp(arrived_at))
    if paid_at is not None:
        message.paid_at.CopyFrom(stamp(paid_at))
    for name, value in changes.items():
        setattr(message, name, value)
    return message


def small_levels(
    version: str, limits: dict[str, str], years: tuple[int, int] = (2025, 2027), opening: dict[str, object] | None = None
) -> str:
    """A TPL reference document like the packaged one, with test-sized annual limits (and another
    opening rule, where given)."""
    import json

    from server.adapters.reference_files import PACKAGED

    document = json.loads(PACKAGED.read_text(encoding="utf-8"))
    document["version"] = version
    if opening is not None:
        document["opening"] = opening
    for tpl in document["tpls"]:
        tpl["years"] = list(years)
        if tpl["tpl_number"] in limits:
            tpl["annual_limit"] = limits[tpl["tpl_number"]]
    return json.dumps(document)


def run_cutoff_batch(server, clock) -> dt.datetime:  # type: ignore[no-untyped-def]
    """Move the test clock just past the next daily cutoff (20:30 Eastern) and run that batch, as the
    server's timer would; the cutoff."""
    calendar = server.use_cases.claims.calendar
    cutoff = calendar.next_cutoff(clock.now())
    clock.at = cutoff + dt.timedelta(seconds=1)
    server.use_cases.claims.run_due_batch()
    return cutoff
