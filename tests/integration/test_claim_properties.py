"""Random interleavings of claims, reversals, replays, certificate changes and cutoff batches, checked after every step.

Runs on the service layer over a real SQLite file (no network: hypothesis needs many examples).
"""
from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import text

from contract.keys import trust_entry, write_trust_store
from ecert.v1 import certificate_pb2 as cpb
from server.adapters.database import Database
from server.api.claim_converters import line_from_proto
from server.api.converters import envelope_from_proto
from server.app import build_use_cases
from server.config import Settings
from server.domain.errors import DomainError
from server.service.claims import ReversalKind
from server.service.clock import FixedClock
from tests.factories import CANCEL, CREATE, NOW, REPLACE, certificate, claim_line, envelope, new_signer, small_levels

CERTIFICATES = [f"MX26-0000020{n}" for n in range(3)]
LIMIT = Decimal(3000)  # SME: 500 dozen knit shirts


class ClaimLedger(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="ecert-prop-"))
        self.signer = new_signer()
        config = Settings(data_dir=self.directory, database_url="", port=0, trust_store="", receipt_key="")
        write_trust_store(config.resolved_trust_store(), [trust_entry(self.signer, "MX", NOW - dt.timedelta(days=400), NOW + dt.timedelta(days=400))])
        self.database = Database(config.resolved_database_url())
        self.database.upgrade()
        self.clock = FixedClock(NOW)
        self.use = build_use_cases(config, self.database, self.clock)
        self.use.references.load(small_levels("prop", {"9823.53.01": str(LIMIT)}))
        self.messages = 0
        self.versions = {}
        for number in CERTIFICATES:
            self._transmit(certificate(number, quantity="200"), 0)
        self.entries = 0
        self.requests: list = []  # every claim request sent, for replays
        self.live: list[tuple[str, int]] = []  # entry lines with a charge that can be reversed

    def teardown(self) -> None:
        self.use.events.stop()
        self.database.dispose()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _transmit(self, cert: cpb.Certificate, replaces: int, action: int | None = None) -> bool:
        self.messages += 1
        kind = action if action is not None else (REPLACE if replaces else CREATE)
        sealed = envelope(self.signer, cert, message_id=f"p-{self.messages}", action=kind, replaces_version=replaces)
        try:
            result = self.use.transmissions.submit(envelope_from_proto(sealed))
        except DomainError:
            return False
        self.versions[cert.certificate_number] = result.receipt.certificate_version
        return True

    @rule(which=st.integers(0, 2), dozens=st.integers(1, 120))
    def claim(self, which: int, dozens: int) -> None:
        self.entries += 1
        line = line_from_proto(claim_line(self.entries, certificate_number=CERTIFICATES[which], quantity=str(dozens), paid_at=self.clock.at))
        record, replayed = self.use.claims.match(line)
        assert not replayed
        self.requests.append(line)
        if record.granted_quantity > 0 or record.decision == "PENDING":
            self.live.append((record.entry_number, 1))

    @rule()
    def tick(self) -> None:
        """Later claims are presented later (and some at the same instant as others)."""
        self.clock.advance(minutes=1)

    @rule()
    def cutoff(self) -> None:
        """The day's cutoff: the batch decides what waits near fill, in presentation order."""
        self.clock.at = self.use.claims.calendar.next_cutoff(self.clock.at) + dt.timedelta(seconds=1)
        self.use.claims.run_due_batch()
        with self.database.read_engine.connect() as c:
            waiting = c.execute(text("SELECT count(*) FROM claims WHERE decision = 'PENDING' AND reversed_at IS NULL")).scalar_one()
        assert waiting == 0  # every claim pending before the cutoff was decided

    @precondition(lambda self: bool(self.requests))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        line = data.draw(st.sampled_from(self.requests))
        before = self._tables()
        record, replayed = self.use.claims.match(line)
        assert replayed and self._tables() == before

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def reverse(self, data: st.DataObject) -> None:
        entry, line_number = data.draw(st.sampled_from(self.live))
        self.use.claims.reverse(entry, line_number, ReversalKind.CANCELED, None, "property test")
        self.live.remove((entry, line_number))
        again = self.use.claims.reverse(entry, line_number, ReversalKind.CANCELED, None, "retry")
        assert again[2]  # a repeated reversal is a replay

    @rule(which=st.integers(0, 2), quantity=st.integers(1, 300))
    def replace_certificate(self, which: int, quantity: int) -> None:
        number = CERTIFICATES[which]
        self._transmit(certificate(number, quantity=str(quantity)), self.versions[number])

    @rule(which=st.integers(0, 2))
    def cancel_certificate(self, which: int) -> None:
        number = CERTIFICATES[which]
        self._transmit(cpb.Certificate(certificate_number=number, issuing_country="MX"), self.versions[number], CANCEL)

    def _tables(self) -> dict[str, list[tuple]]:
        with self.database.read_engine.connect() as connection:
            return {t: sorted(map(tuple, connection.execute(text(f"SELECT * FROM {t}")))) for t in ("claims", "quota_levels", "quota_ledger", "certificates")}

    @invariant()
    def balances_hold(self) -> None:
        if not hasattr(self, "database"):
            return
        with self.database.read_engine.connect() as c:
            charged, limit = c.execute(text("SELECT charged, \"limit\" FROM quota_usage WHERE tpl_number='9823.53.01' AND quota_year=2026")).one()
            granted = c.execute(text("SELECT coalesce(sum(granted_measure), 0) FROM claims WHERE reversed_at IS NULL AND tpl_number='9823.53.01'")).scalar_one()
            ledger = c.execute(text("SELECT coalesce(sum(delta), 0) FROM quota_ledger WHERE tpl_number='9823.53.01' AND quota_year=2026")).scalar_one()
            assert 0 <= charged <= limit
            assert charged == granted == ledger
            for quantity, used, number in c.execute(text("SELECT quantity, used_quantity, certificate_number FROM certificates")):
                # A pending claim reserves all it asked; any other holds what it was granted (or offered).
                used_by_claims = c.execute(text(
                    "SELECT coalesce(sum(CASE WHEN decision = 'PENDING' THEN claimed_quantity ELSE granted_quantity END), 0)"
                    " FROM claims WHERE reversed_at IS NULL AND certificate_number = :n"), {"n": number}).scalar_one()
                assert 0 <= used <= quantity and used == used_by_claims


ClaimLedger.TestCase.settings = settings(
    max_examples=12, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_claim_ledger = ClaimLedger.TestCase
