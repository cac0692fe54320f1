"""Seeded random, realistic certificates of eligibility (same seed, same certificates)."""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

from ecert.v1 import certificate_pb2 as cpb
from gateway_sim.gateway.catalog import EXPORTERS, GOODS, IMPORTERS, PRODUCERS, TPL_WEIGHTS


def certificate_number(country: str, year: int, serial: int) -> str:
    """The partner's pattern, e.g. MX26-00000001 (see the reference data's certificate_number_pattern)."""
    return f"{country}{year % 100:02d}-{serial:08d}"


class CertificateGenerator:
    def __init__(self, seed: int | None = None, *, country: str = "MX", today: dt.date | None = None):
        self.rng = random.Random(seed)
        self.country = country
        self.today = today or dt.date.today()

    def certificate(self, serial: int) -> cpb.Certificate:
        rng = self.rng
        year = self.today.year
        tpl = rng.choices(list(TPL_WEIGHTS), weights=list(TPL_WEIGHTS.values()))[0]
        htsus, description, unit, low, high = rng.choice(GOODS[tpl])
        quantity = self.round_quantity(rng.randint(low, high))
        issued = max(dt.date(year, 1, 1), self.today - dt.timedelta(days=rng.randint(0, 20)))
        exporter, producer = rng.choice(EXPORTERS), rng.choice(PRODUCERS)
        return cpb.Certificate(
            certificate_number=certificate_number(self.country, year, serial),
            issuing_country=self.country,
            tpl_number=tpl,
            htsus_number=htsus,
            goods_description=description,
            quantity=str(quantity),
            unit=unit,
            importer_of_record=rng.choice(IMPORTERS),
            exporter=cpb.Party(name=exporter[0], address=exporter[1], tax_id=exporter[2]),
            producer=cpb.Party(name=producer[0], address=producer[1], tax_id=producer[2]),
            quota_year=year,
            issue_date=issued.isoformat(),
            last_valid_date=dt.date(year, 12, 31).isoformat(),
            invoice_number=f"FAC-{year}-{rng.randint(1, 99999):05d}",
        )

    def large_shipment(self, serial: int, tpl: str, quantity: int) -> cpb.Certificate:
        """A certificate like any other, for the TPL's first good and an exact quantity."""
        certificate = self.certificate(serial)
        htsus, description, unit, _low, _high = GOODS[tpl][0]
        certificate.tpl_number, certificate.htsus_number, certificate.goods_description = tpl, htsus, description
        certificate.unit, certificate.quantity = unit, str(quantity)
        return certificate

    @staticmethod
    def round_quantity(value: int) -> int:
        step = 10 if value < 1000 else 100
        return max(step, value // step * step)

    def amended(self, certificate: cpb.Certificate) -> cpb.Certificate:
        """A corrected certificate: the quantity goes down a little (the usual amendment)."""
        changed = cpb.Certificate()
        changed.CopyFrom(certificate)
        factor = Decimal(self.rng.randint(80, 97)) / 100
        changed.quantity = str(self.round_quantity(int(Decimal(certificate.quantity) * factor)))
        return changed


# Mistakes a real issuing office makes, each one customs must refuse with a coded error.
MISTAKES = ("unit_not_allowed", "validity_inverted", "importer_malformed")


def with_mistake(certificate: cpb.Certificate, mistake: str) -> cpb.Certificate:
    wrong = cpb.Certificate()
    wrong.CopyFrom(certificate)
    if mistake == "unit_not_allowed":
        wrong.tpl_number, wrong.unit = "9823.53.06", "DOZ"  # yarn is certified in kilograms
        wrong.htsus_number = "5205.12.1000"
    elif mistake == "validity_inverted":
        wrong.last_valid_date = f"{wrong.quota_year - 1}-12-31"  # before the issue date
    elif mistake == "importer_malformed":
        wrong.importer_of_record = "12345"
    return wrong
