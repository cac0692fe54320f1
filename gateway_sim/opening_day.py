"""`ecert demo --opening-day`: a 2027 opening of TPL 1 played on customs' simulated clock.

Real parties, as in `ecert demo`: a development PKI, customs' certification service as a separate
process with mutual TLS, started with a simulated clock (`ECERT_SIMULATED_CLOCK`) on Thursday
31 December 2026 at 15:00 Eastern. An operator first loads a test-sized TPL 1 level (1,000 SME for
every year) with `ecert reference load`, as a real operator loads reference data into the database.
Then, through the SDK and each party's own TLS identity, Mexico transmits five 2027 certificates
(PartnerClient), an internal customs client presents entry summary lines and answers offers on the
filers' behalf (CustomsClient), and an administrator drives the clock (OperatorClient):

1. before the opening date: a line presented on 31 December and one on Saturday 2 January get no
   quota status (MFN `PRESENTED_BEFORE_OPENING`);
2. 10:00 Eastern on Monday 4 January, the opening date: lines presented in the window are `QUEUED`
   and are batched with the opening moment's time stamp (12:00 noon Eastern);
3. past noon: the opening batch is allocated; oversubscribed, each line gets a `PRORATED_OFFER` with
   its deadline, the end of the fifth business day after the opening date;
4. one importer accepts part of its offer (granted, `PARTIAL` `OFFER_ACCEPTED`), one declines;
5. past the deadline (Tuesday 12 January): the unanswered offer lapses by the service's own timer
   (polled with GetClaim) and its share returns to the level; a late answer is refused;
6. near fill, two lines presented in one order arrive in the other: both wait (`PENDING`), and the
   20:30 cutoff batch decides them in presentation order.

Every step states what it expects and checks it against the service's answers; the report is
complete only if every check held. Expectations are derived from the service's own conversion
factor and the loaded level, so the SME table (illustrative factors) can change underneath.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from client.pki import init_pki
from client.sdk import (
    Certificate,
    ClaimDecision,
    ClaimResult,
    CustomsClient,
    EcertError,
    EntryLine,
    OperatorClient,
    PartnerClient,
    Party as TradeParty,
)
from gateway_sim.demo import PartyDied
from gateway_sim.processes import Party, start_service
from gateway_sim.reference_table import PACKAGED
from contract.entry_number import make_entry_number

EASTERN = ZoneInfo("America/New_York")
TPL = "9823.53.01"
YEAR = 2027
LEVEL = Decimal(1000)  # SME: three opening claims of 180 dozen knit shirts oversubscribe it
CRITICAL_SHARE = Decimal("0.9")  # the service's default ECERT_CRITICAL_SHARE
START = dt.datetime(2026, 12, 31, 15, 0, tzinfo=EASTERN)
# The 2027 opening date is its first business day, Monday 4 January (1 January is a federal holiday,
# then a weekend); the window runs from 00:00 to 12:00 noon Eastern (QB 24-111). An offer's deadline
# is the end of the fifth business day after the opening date: Monday 11 January, midnight Eastern.
# The opening moment's time stamp, which lines of the window are batched with: 12:00 noon Eastern (QB 16-128).
OPENING = dt.datetime(2027, 1, 4, 12, 0, tzinfo=EASTERN)
NOON = dt.datetime(2027, 1, 4, 12, 0, tzinfo=EASTERN)
DEADLINE = dt.datetime(2027, 1, 12, 0, 0, tzinfo=EASTERN)
FILER = "B7Q"
TIMER_WAIT_S = 20.0  # the service's opening and lapse timers run every 5 s


@dataclass(frozen=True)
class Importer:
    key: str
    name: str
    number: str  # importer of record
    certificate: str


IMPORTERS = {
    i.key: i for i in (
        Importer("A", "Norteño Apparel", "12-345678900", "MX27-00000101"),
        Importer("B", "Bajío Imports", "23-456789100", "MX27-00000102"),
        Importer("C", "Costa Textiles", "34-567891200", "MX27-00000103"),
        Importer("D", "Delta Wear", "45-678912300", "MX27-00000104"),
        Importer("E", "Eagle Knits", "56-789123400", "MX27-00000105"),
    )
}


def eastern(at: dt.datetime | None) -> str:
    """'Mon 4 Jan 2027 10:00 EST' (customs' quota time zone)."""
    if at is None:
        return ""
    local = at.astimezone(EASTERN)
    return f"{local:%a} {local.day} {local:%b %Y %H:%M %Z}"


def units(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,.0f}" if value == value.to_integral_value() else f"{value:,}"


@dataclass
class ClaimRow:
    importer: str  # its letter (IMPORTERS)
    entry: str
    presented: dt.datetime | None  # as the filer presented it (payment of estimated duties)
    ranked_at: dt.datetime | None  # the presentation time the service ranks it by
    asked: str
    decision: str
    granted: str
    reasons: str
    note: str = ""


@dataclass
class Check:
    expectation: str
    ok: bool
    seen: str = ""  # what the service answered, when it differs


@dataclass
class Step:
    title: str
    clock: str  # the simulated instant(s) the step ran at
    rows: list[ClaimRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def expect(self, expectation: str, ok: bool, seen: str = "") -> bool:
        self.checks.append(Check(expectation, bool(ok), "" if ok else seen))
        return bool(ok)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


@dataclass
class LevelPoint:
    after: str
    charged: Decimal
    remaining: Decimal
    state: str


@dataclass
class OpeningDayReport:
    directory: pathlib.Path
    importers: dict[str, Importer] = field(default_factory=lambda: dict(IMPORTERS))
    level: Decimal = LEVEL
    measure_unit: str = "SME"
    factor: Decimal | None = None
    factor_version: str = ""
    reference_loaded: str = ""
    transmitted_at: dt.datetime | None = None
    transmitted: list[tuple[str, str, str]] = field(default_factory=list)  # certificate, importer key, receipt outcome
    steps: list[Step] = field(default_factory=list)
    levels: list[LevelPoint] = field(default_factory=list)
    reconcile: str = ""
    reconcile_ok: bool = False
    failure: str = ""  # an unexpected error that stopped the scenario
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps) and self.reconcile_ok and not self.failure


class _Stop(Exception):
    """A step's outcome leaves nothing for the next steps to build on."""


def reference_document(version: str = "ecert-demo-opening-day.1") -> str:
    """The packaged TPL table with TPL 1 cut to a test-sized level, as an operator would load it."""
    document = json.loads(PACKAGED.read_text(encoding="utf-8"))
    packaged = document["version"]
    document["version"] = version
    document["source"] = (f"ecert demo --opening-day: the packaged table {packaged} with TPL 1 cut to {LEVEL} SME a year, "
                          "so that a few claims oversubscribe its opening")
    for tpl in document["tpls"]:
        if tpl["tpl_number"] == TPL:
            tpl["annual_limit"] = str(LEVEL)
    return json.dumps(document, indent=1)


def _ecert(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


class _World:
    """The parties' clients, each under its own TLS identity."""

    def __init__(self, pki: pathlib.Path, service: Party):
        from client.pki import PkiLayout

        layout = PkiLayout(pki)
        self.service = service
        self.partner = PartnerClient(layout.document_signer(), "MX", target=service.address, tls_dir=layout.party("gateway-mx"))
        self.customs = CustomsClient(target=service.address, tls_dir=layout.party("customs"))
        self.admin = OperatorClient(target=service.address, tls_dir=layout.party("admin"))
        self.transaction = 0

    def close(self) -> None:
        for client in (self.partner, self.customs, self.admin):
            client.close()

    def alive(self) -> None:
        if not self.service.alive():
            raise PartyDied(f"the service exited with code {self.service.process.returncode}; end of its log:\n{self.service.log_tail()}")

    def now(self) -> dt.datetime:
        return self.admin.clock_now()

    def set_clock(self, at: dt.datetime) -> dt.datetime:
        return self.admin.set_clock(at)

    def line(self, importer: Importer, quantity: int, presented: dt.datetime) -> EntryLine:
        """An entry summary line for 2027 goods (entry type 02, S+) presented (estimated duties paid) at
        `presented`; filed 20 minutes and arrived two hours before that."""
        self.transaction += 1
        return EntryLine(
            entry_number=make_entry_number(FILER, 27000 + self.transaction), line_number=1, filer_code=FILER,
            importer_of_record=importer.number, htsus_number="6109.10.0012", tpl_number=TPL,
            certificate_number=importer.certificate, quantity=str(quantity), unit="DOZ",
            date_of_importation=max(presented.astimezone(EASTERN).date(), dt.date(YEAR, 1, 2)),
            filed_at=presented - dt.timedelta(minutes=20), arrived_at=presented - dt.timedelta(hours=2), paid_at=presented,
        )

    def level(self) -> tuple[Decimal, Decimal, str]:
        status = self.customs.quota_status(TPL, YEAR)
        return status.charged or Decimal(0), status.remaining or Decimal(0), status.state.name.lower()

    def wait_for(self, entry: str, done: Callable[[ClaimResult], bool]) -> tuple[ClaimResult, float]:
        """Polls GetClaim until `done` (the service's timers decide, not this client)."""
        started = time.monotonic()
        while True:
            result = self.customs.get_claim(entry, 1)
            if done(result) or time.monotonic() - started > TIMER_WAIT_S:
                return result, time.monotonic() - started
            self.alive()
            time.sleep(0.25)


def _row(importer: Importer, result: ClaimResult, presented: dt.datetime | None, note: str = "") -> ClaimRow:
    granted = units(result.granted_quantity) if result.decision in (ClaimDecision.PREFERENTIAL, ClaimDecision.PARTIAL) else ""
    if result.decision is ClaimDecision.PRORATED_OFFER:
        granted = f"offered {units(result.granted_quantity)}"
    return ClaimRow(
        importer.key, result.entry_number, presented, result.presentation_time,
        f"{units(result.claimed_quantity)} {result.unit}", result.decision.name, granted, ", ".join(result.reasons), note,
    )


def _refusal(call: Callable[[], object]) -> str:
    try:
        call()
    except EcertError as error:
        return f"{type(error).__name__} {error.reason}"
    return "accepted"


def run_opening_day(directory: pathlib.Path, *, log: Callable[[str], None] = print) -> OpeningDayReport:
    started = time.monotonic()
    report = OpeningDayReport(directory)
    pki = directory / "pki"
    service_dir = directory / "service"
    log(f"[1/4] development PKI in {pki}")
    # Valid now (TLS is checked against the real clock) and on the simulated days (the trust store's
    # document-signing key is checked against the service's clock).
    init_pki(pki, now=min(dt.datetime.now(dt.timezone.utc), START.astimezone(dt.timezone.utc)))

    log(f"[2/4] operator loads a test-sized TPL 1 level ({LEVEL:,} SME) with `ecert reference load`")
    reference = directory / "reference" / "tpls-opening-day.json"
    reference.parent.mkdir(parents=True, exist_ok=True)
    reference.write_text(reference_document(), encoding="utf-8")
    database_env = {"ECERT_DATA_DIR": str(service_dir), "ECERT_DATABASE_URL": ""}
    service_dir.mkdir(parents=True, exist_ok=True)
    loaded = _ecert(["reference", "load", str(reference)], database_env)
    report.reference_loaded = (loaded.stdout.strip() or loaded.stderr.strip()).splitlines()[-1] if (loaded.stdout + loaded.stderr).strip() else ""
    if loaded.returncode != 0:
        report.failure = f"ecert reference load exited {loaded.returncode}: {loaded.stderr.strip()}"
        return report

    log(f"[3/4] starting customs' certification service on a simulated clock at {eastern(START)} (mutual TLS)")
    service = start_service(pki, service_dir, env={"ECERT_SIMULATED_CLOCK": START.isoformat()})
    world: _World | None = None
    try:
        world = _World(pki, service)
        log("[4/4] Mexico transmits 2027 certificates; claims are presented; the clock is driven through the opening")
        _play(world, report)
        world.alive()
        checked = _ecert(["audit", "reconcile"], database_env)
        report.reconcile = (checked.stdout.strip() or checked.stderr.strip())
        report.reconcile_ok = checked.returncode == 0
    except _Stop:
        report.failure = f"stopped after step {len(report.steps)}: the steps after it build on what it should have done"
    except EcertError as error:
        if world is not None:
            world.alive()  # a service that died is reported as such
        report.failure = f"{type(error).__name__} {error.reason}: {error}"
    finally:
        if world is not None:
            world.close()
        service.stop()
    report.seconds = time.monotonic() - started
    return report


def _record_level(world: _World, report: OpeningDayReport, after: str) -> Decimal:
    charged, remaining, state = world.level()
    report.levels.append(LevelPoint(after, charged, remaining, state))
    return charged


def _play(world: _World, report: OpeningDayReport) -> None:
    imp = IMPORTERS
    steps = report.steps

    # -- Mexico transmits ---------------------------------------------------------------------------
    sent_at = world.now()
    for importer in imp.values():
        certificate = Certificate(
            certificate_number=importer.certificate, issuing_country="MX", tpl_number=TPL, htsus_number="6109.10.0012",
            goods_description="Men's knit cotton T-shirts", quantity="500", unit="DOZ", importer_of_record=importer.number,
            quota_year=YEAR, issue_date="2026-12-28", last_valid_date="2027-12-31",
            exporter=TradeParty("Textiles del Norte SA de CV", "Monterrey, NL", "TNO010101AAA"),
            producer=TradeParty("Confecciones Bajío SA de CV", "León, Gto.", "CBA020202BBB"), invoice_number=f"INV-{importer.certificate}",
        )
        # Sealed at the simulated instant: the gateway lives in the same simulated world as customs.
        result = world.partner.submit_envelope(world.partner.seal(certificate, sent_at=world.now()))
        report.transmitted.append((importer.certificate, importer.key, result.receipt.outcome.name))
    report.transmitted_at = sent_at
    _record_level(world, report, "certificates transmitted")

    # -- 1. before the opening date -------------------------------------------------------------------
    step = Step("Before the opening date: no quota status", "")
    steps.append(step)
    at_december = world.now()
    december = world.customs.match_claim(world.line(imp["A"], 100, at_december)).result
    saturday = world.set_clock(dt.datetime(2027, 1, 2, 10, 0, tzinfo=EASTERN))
    weekend = world.customs.match_claim(world.line(imp["B"], 50, saturday)).result
    step.clock = f"{eastern(at_december)}; {eastern(saturday)}"
    step.rows = [_row(imp["A"], december, at_december), _row(imp["B"], weekend, saturday, "1 January a holiday, then a weekend")]
    refused = (ClaimDecision.MFN_REQUIRED, ["PRESENTED_BEFORE_OPENING"])
    step.expect("presented on 31 December: MFN, PRESENTED_BEFORE_OPENING", (december.decision, december.reasons) == refused,
                f"{december.decision.name} {december.reasons}")
    step.expect("presented on Saturday 2 January (before the first business day): MFN, PRESENTED_BEFORE_OPENING",
                (weekend.decision, weekend.reasons) == refused, f"{weekend.decision.name} {weekend.reasons}")
    charged = _record_level(world, report, "1. before the opening")
    step.expect("nothing charged to 2027", charged == 0, f"charged {charged}")
    report.factor = december.conversion_factor
    report.factor_version = december.factor_version
    report.measure_unit = december.measure_unit or report.measure_unit
    step.notes.append("Each importer must present again (a new entry summary, or a correction): the line then takes its new presentation time.")

    # -- 2. the opening window ----------------------------------------------------------------------------
    ten = world.set_clock(dt.datetime(2027, 1, 4, 10, 0, tzinfo=EASTERN))
    step = Step("The opening window: presented from 00:00 to 12:00 noon Eastern on the opening date", eastern(ten))
    steps.append(step)
    window = [(imp["A"], 100, dt.datetime(2027, 1, 4, 8, 15, tzinfo=EASTERN)), (imp["B"], 50, dt.datetime(2027, 1, 4, 9, 40, tzinfo=EASTERN)),
              (imp["C"], 30, ten)]
    queued: list[tuple[Importer, int, dt.datetime, ClaimResult]] = []
    for importer, quantity, presented in window:
        result = world.customs.match_claim(world.line(importer, quantity, presented)).result
        queued.append((importer, quantity, presented, result))
        step.rows.append(_row(importer, result, presented))
    step.expect("every line in the window is QUEUED",
                all(r.decision is ClaimDecision.QUEUED for *_, r in queued), ", ".join(r.decision.name for *_, r in queued))
    step.expect("each is stamped with the opening moment, 12:00 noon Eastern on 4 January",
                all(r.presentation_time == OPENING for *_, r in queued), ", ".join(eastern(r.presentation_time) for *_, r in queued))
    charged = _record_level(world, report, "2. window (queued)")
    step.expect("nothing charged before the window closes", charged == 0, f"charged {charged}")
    if not step.ok:
        raise _Stop

    # -- 3. noon: the opening batch -------------------------------------------------------------------------
    moved = world.admin.advance_clock(NOON - ten + dt.timedelta(minutes=5))
    step = Step("Past noon: the opening batch is allocated", eastern(moved))
    steps.append(step)
    factor = report.factor or Decimal(0)
    asked = sum(Decimal(q) * factor for _, q, _, _ in queued)
    rate = Fraction(LEVEL) / Fraction(asked) if asked else Fraction(0)
    offers: dict[str, tuple[ClaimResult, int]] = {}
    waited = 0.0
    for importer, quantity, presented, result in queued:
        decided, seconds = world.wait_for(result.entry_number, lambda r: r.decision is not ClaimDecision.QUEUED)
        waited = max(waited, seconds)
        expected = math.floor(quantity * rate)
        offers[importer.key] = (decided, expected)
        step.rows.append(_row(importer, decided, presented))
    step.notes.append(f"Asked {units(asked)} {report.measure_unit} of {units(LEVEL)}: oversubscribed, rate {float(rate):.6f} "
                      f"(rounded down to whole dozens); the service's timer allocated the batch within {waited:.1f} s. Each offer stays open until "
                      f"{eastern(DEADLINE)}.")
    step.expect("each line gets a PRORATED_OFFER (reason PRORATED), not a grant",
                all((r.decision, r.reasons) == (ClaimDecision.PRORATED_OFFER, ["PRORATED"]) for r, _ in offers.values()),
                ", ".join(f"{r.decision.name} {r.reasons}" for r, _ in offers.values()))
    step.expect(f"offers are the pro-rata shares, rounded down: {', '.join(str(e) for _, e in offers.values())} DOZ",
                all(r.granted_quantity == e for r, e in offers.values()), ", ".join(units(r.granted_quantity) for r, _ in offers.values()))
    step.expect("the deadline is the end of the fifth business day after the opening date (Mon 11 Jan, midnight Eastern)",
                all(r.offer_expires_at == DEADLINE for r, _ in offers.values()), ", ".join(eastern(r.offer_expires_at) for r, _ in offers.values()))
    reserved = sum(Decimal(e) * factor for _, e in offers.values())
    charged = _record_level(world, report, "3. noon batch (offers reserved)")
    step.expect(f"the offered shares are reserved on the level ({units(reserved)} {report.measure_unit})", charged == reserved, f"charged {charged}")
    if not step.ok:
        raise _Stop

    # -- 4. answers ----------------------------------------------------------------------------------------
    tuesday = world.set_clock(dt.datetime(2027, 1, 5, 9, 0, tzinfo=EASTERN))
    step = Step("Answers: one importer accepts part of its offer, one declines", eastern(tuesday))
    steps.append(step)
    offer_a = offers["A"][1]
    accept = offer_a * 2 // 3 // 10 * 10 or offer_a  # about two thirds, in tens where it can
    part = world.customs.answer_prorated_offer(offers["A"][0].entry_number, 1, accept).result
    declined = world.customs.answer_prorated_offer(offers["B"][0].entry_number, 1, 0).result
    step.rows = [_row(imp["A"], part, window[0][2], f"accepted {accept} of {offer_a}"),
                 _row(imp["B"], declined, window[1][2], f"declined its {offers['B'][1]}")]
    step.expect(f"A is granted the {accept} DOZ it accepted: PARTIAL, PRORATED, OFFER_ACCEPTED",
                (part.decision, part.reasons, part.granted_quantity) == (ClaimDecision.PARTIAL, ["PRORATED", "OFFER_ACCEPTED"], accept),
                f"{part.decision.name} {part.reasons} {part.granted_quantity}")
    step.expect("A keeps its original presentation time (the opening moment)", part.presentation_time == OPENING, eastern(part.presentation_time))
    step.expect("B declined: MFN, PRORATED, OFFER_DECLINED",
                (declined.decision, declined.reasons) == (ClaimDecision.MFN_REQUIRED, ["PRORATED", "OFFER_DECLINED"]),
                f"{declined.decision.name} {declined.reasons}")
    expected = Decimal(accept) * factor + Decimal(offers["C"][1]) * factor
    charged = _record_level(world, report, "4. A accepts part, B declines")
    step.expect(f"what A did not accept and B's whole offer return to the level (charged {units(expected)}: A's grant and C's open offer)",
                charged == expected, f"charged {charged}")
    if not step.ok:
        raise _Stop

    # -- 5. past the deadline: C's offer lapses ------------------------------------------------------------
    after = world.set_clock(dt.datetime(2027, 1, 12, 10, 0, tzinfo=EASTERN))
    step = Step("Past the deadline: the unanswered offer lapses", eastern(after))
    steps.append(step)
    offer_c = offers["C"][0]
    lapsed, seconds = world.wait_for(offer_c.entry_number, lambda r: r.decision is not ClaimDecision.PRORATED_OFFER)
    late = _refusal(lambda: world.customs.answer_prorated_offer(offer_c.entry_number, 1, offers["C"][1]))
    usage = world.customs.certificate_usage("MX", imp["C"].certificate)
    step.rows = [_row(imp["C"], lapsed, window[2][2], f"lapsed after {seconds:.1f} s (the service's timer)")]
    step.notes.append(f"C answers late: {late}. Certificate {imp['C'].certificate}: used {units(usage.used_quantity)} of "
                      f"{units(usage.quantity)} {usage.unit}.")
    step.expect("C's offer lapses by the service's timer: MFN, PRORATED, OFFER_LAPSED",
                (lapsed.decision, lapsed.reasons) == (ClaimDecision.MFN_REQUIRED, ["PRORATED", "OFFER_LAPSED"]),
                f"{lapsed.decision.name} {lapsed.reasons} after {seconds:.1f} s")
    step.expect("an answer after the deadline is refused OFFER_LAPSED", late == "FailedPrecondition OFFER_LAPSED", late)
    step.expect("C's certificate is no longer drawn on", usage.used_quantity == 0, f"used {usage.used_quantity}")
    expected = Decimal(accept) * factor
    charged = _record_level(world, report, "5. C's offer lapsed")
    step.expect(f"C's share returns to the level (charged {units(expected)}: A's grant only)", charged == expected, f"charged {charged}")
    if not step.ok:
        raise _Stop

    # -- 6. near fill: presentation order against arrival order ----------------------------------------------
    room = LEVEL - charged
    whole = int(room // factor) if factor else 0
    # Each line fits alone, the two together do not, and either alone would take the level past its
    # critical share: the level goes on hold and the daily cutoff decides them.
    quantity = min(whole, max(whole // 2 + 7, int((LEVEL * CRITICAL_SHARE - charged) // factor) + 1))
    step = Step("Near fill: two lines presented in one order arrive in the other", eastern(world.now()))
    steps.append(step)
    d_presented = dt.datetime(2027, 1, 12, 9, 10, tzinfo=EASTERN)
    e_presented = dt.datetime(2027, 1, 12, 9, 40, tzinfo=EASTERN)
    d_line, e_line = world.line(imp["D"], quantity, d_presented), world.line(imp["E"], quantity, e_presented)
    first = world.customs.match_claim(e_line).result  # E, presented second, reaches the service first
    second = world.customs.match_claim(d_line).result
    step.expect("both wait for the daily cutoff: PENDING, LEVEL_ON_HOLD (either would pass the 90% critical share)",
                all((r.decision, r.reasons) == (ClaimDecision.PENDING, ["LEVEL_ON_HOLD"]) for r in (first, second)),
                f"{first.decision.name} {first.reasons}, {second.decision.name} {second.reasons}")
    cutoff = world.set_clock(dt.datetime(2027, 1, 12, 20, 31, tzinfo=EASTERN))
    e_result, _ = world.wait_for(e_line.entry_number, lambda r: r.decision is not ClaimDecision.PENDING)
    d_result, seconds = world.wait_for(d_line.entry_number, lambda r: r.decision is not ClaimDecision.PENDING)
    step.rows = [_row(imp["E"], e_result, e_presented, "arrived 1st"), _row(imp["D"], d_result, d_presented, "arrived 2nd")]
    left = int((room - quantity * factor) // factor)
    step.notes.append(f"{units(room)} {report.measure_unit} left ({whole} DOZ); each line asks {quantity} DOZ: either fits alone, not both. "
                      f"Decided by the 20:30 cutoff batch ({eastern(cutoff)}; the service's timer, {seconds:.1f} s).")
    step.expect(f"D, presented first but arriving second, is granted all {quantity} DOZ (PREFERENTIAL)",
                (d_result.decision, d_result.granted_quantity) == (ClaimDecision.PREFERENTIAL, quantity),
                f"{d_result.decision.name} {d_result.granted_quantity}")
    step.expect(f"E, presented 30 minutes after D though arriving first, is cut to the {left} DOZ left (PARTIAL, LEVEL_FILLED)",
                (e_result.decision, e_result.granted_quantity, e_result.reasons) == (ClaimDecision.PARTIAL, left, ["LEVEL_FILLED", "PARTIAL_FILL"]),
                f"{e_result.decision.name} {e_result.granted_quantity} {e_result.reasons}")
    step.notes.append(
        "Presentation decided, not arrival: near fill the level is on hold and the daily cutoff batch decides its claims in "
        "presentation-time order (19 CFR 132.11; QB 23-128, README 'Near fill')."
    )
    _record_level(world, report, "6. near fill")
