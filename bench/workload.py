"""What the load generator sends: requests built before the clock starts, from a plain-JSON recipe
(the recipe crosses a process boundary; the requests never do)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from contract.entry_number import make_entry_number
from contract.envelope import seal
from ecert.bench.v1 import echo_pb2
from ecert.v1 import certificate_pb2 as cpb
from ecert.v1 import match_pb2 as mpb
from ecert.v1 import quota_pb2 as qpb
from ecert.v1 import transmission_pb2 as tpb

IMPORTER = "12-345678900"
EXPORTER = ("Textiles del Norte SA de CV", "Av. Juárez 100, Monterrey, NL", "TNO010101AAA")
STRIDE = 1_000_003
PRODUCER = ("Confecciones Bajío SA de CV", "Calle 5 de Mayo 22, León, Gto.", "CBA020202BBB")


@dataclass(frozen=True)
class Good:
    """One kind of goods under a fileable TPL (HTSUS and unit fit the packaged reference data)."""

    tpl_number: str
    htsus_number: str
    description: str
    unit: str


GOODS: dict[str, Good] = {
    "9823.53.01": Good("9823.53.01", "6109.10.0012", "Men's knit cotton T-shirts", "DOZ"),
    "9823.53.02": Good("9823.53.02", "6110.11.0030", "Wool knit sweaters", "DOZ"),
    "9823.53.04": Good("9823.53.04", "5208.52.3035", "Printed plain-weave cotton fabric", "M2"),
    "9823.53.05": Good("9823.53.05", "6006.22.9080", "Dyed cotton knit fabric", "KG"),
    "9823.53.06": Good("9823.53.06", "5205.12.1000", "Single uncombed cotton yarn", "KG"),
}


def certificate_number(year: int, n: int) -> str:
    return f"MX{year % 100:02d}-{n:08d}"


def certificate(number: str, good: Good, *, quantity: str, quota_year: int) -> cpb.Certificate:
    return cpb.Certificate(
        certificate_number=number,
        issuing_country="MX",
        tpl_number=good.tpl_number,
        htsus_number=good.htsus_number,
        goods_description=good.description,
        quantity=quantity,
        unit=good.unit,
        importer_of_record=IMPORTER,
        exporter=cpb.Party(name=EXPORTER[0], address=EXPORTER[1], tax_id=EXPORTER[2]),
        producer=cpb.Party(name=PRODUCER[0], address=PRODUCER[1], tax_id=PRODUCER[2]),
        quota_year=quota_year,
        issue_date=f"{quota_year - 1}-12-01",
        last_valid_date=f"{quota_year}-12-31",
        invoice_number="INV-BENCH",
    )


def _stamp(message: Message, field: str, at: dt.datetime) -> None:
    getattr(message, field).FromDatetime(at.astimezone(dt.timezone.utc))


def claim_line(
    transaction: int, number: str, good: Good, *, quantity: str, imported: str, presented: dt.datetime, filer: str = "B76"
) -> mpb.EntrySummaryLine:
    line = mpb.EntrySummaryLine(
        entry_number=make_entry_number(filer, transaction),
        line_number=1,
        filer_code=filer,
        importer_of_record=IMPORTER,
        entry_type="02",
        country_of_origin="MX",
        htsus_number=good.htsus_number,
        tpl_number=good.tpl_number,
        spi="S+",
        certificate_number=number,
        quantity=quantity,
        unit=good.unit,
        date_of_importation=imported,
    )
    for field in ("filed_at", "arrived_at", "paid_at"):
        _stamp(line, field, presented)
    return line


def build(recipe: dict[str, Any], now: dt.datetime) -> Sequence[Message]:
    """The requests of one measurement. `now` is the service's clock (real time plus its offset)."""
    kind = recipe["rpc"]
    if kind == "echo":
        return [echo_pb2.EchoRequest(payload=b"x" * 64)]
    if kind == "quota":
        return [qpb.GetQuotaStatusRequest(tpl_number="9823.53.01", quota_year=recipe["quota_year"])]
    if kind == "submit":
        from contract.keys import load_signer

        signer = load_signer(recipe["signing_key"], recipe["key_id"])
        good, year = GOODS["9823.53.01"], recipe["quota_year"]
        return [
            tpb.SubmitCertificateRequest(
                envelope=seal(
                    tpb.SignedEnvelope(
                        message_id=f"bench-{n}",
                        sender="MX",
                        action=tpb.TRANSMISSION_ACTION_CREATE,
                        certificate=certificate(certificate_number(year, n), good, quantity=recipe["quantity"], quota_year=year),
                    ),
                    signer,
                    sent_at=now,
                )
            )
            for n in range(recipe["first"], recipe["first"] + recipe["count"])
        ]
    if kind == "match":
        # Claim i uses TPL i mod T and one of that TPL's certificates in turn (recipe["certificates"]:
        # tpl -> [first number, how many]); entry numbers are unique per recipe["first_entry"].
        year = recipe["quota_year"]
        presented = dt.datetime.fromisoformat(recipe["presented"]) if recipe.get("presented") else now - dt.timedelta(hours=1)
        tpls = sorted(recipe["certificates"])
        requests = []
        for i in range(recipe["count"]):
            tpl = tpls[i % len(tpls)]
            first, count = recipe["certificates"][tpl]
            # A large prime stride scatters consecutive claims over the whole table (no hot pages).
            number = certificate_number(year, first + ((i // len(tpls)) * STRIDE) % count)
            line = claim_line(
                recipe["first_entry"] + i, number, GOODS[tpl], quantity=recipe["quantity"][tpl],
                imported=recipe["imported"], presented=presented,
            )
            requests.append(mpb.MatchClaimRequest(line=line))
        return requests
    raise ValueError(f"unknown rpc {kind!r}")
