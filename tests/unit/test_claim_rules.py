"""Claim rules in plain Python: entry numbers, priority, matching, first-come grants, windows."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from contract.entry_number import check_digit, make_entry_number
from server.adapters.reference_files import PACKAGED, load_reference_data, parse_reference_data
from server.domain.business_days import add_business_days, first_business_day, is_business_day
from server.domain.certificate import Certificate, Party
from server.domain.claims import (
    CertificateOnFile,
    Decision,
    QuotaContext,
    allocate,
    check_post_importation_window,
    corrected_presentation,
    holds_its_level,
    mismatches,
    post_importation_deadline,
    screen,
    status_at_presentation,
)
from server.domain.conversion import Category, ConversionTable, convert
from server.domain.entry import EntryLineDraft, canonical_entry_number, validate_entry_line
from server.domain.errors import DomainError
from server.domain.quota import Level, grant_first_come
from server.domain.reference import OpeningRule, Partner
from server.domain.transmission import CertificateStatus
from server.service.quota import QuotaCalendar

UTC = dt.timezone.utc
ENTRY_TYPES = load_reference_data().entry_types  # the packaged USMCA Mexico table
T0 = dt.datetime(2026, 3, 2, 12, tzinfo=UTC)
MX = Partner("MX", "Mexico", r"MX[0-9]{2}-[0-9]{8}", dt.date(2021, 10, 5))


def draft(**changes: object) -> EntryLineDraft:
    values: dict[str, object] = dict(
        entry_number=make_entry_number("B76", 1234567), line_number=1, filer_code="B76",
        importer_of_record="12-345678900", entry_type="02", country_of_origin="MX", htsus_number="6109.10.0012",
        tpl_number="9823.53.01", spi="S+", certificate_number="MX26-00000001", quantity="100", unit="DOZ",
        date_of_importation="2026-03-01", filed_at=T0, arrived_at=T0 + dt.timedelta(hours=1), paid_at=T0 - dt.timedelta(hours=1),
    )
    values.update(changes)
    return EntryLineDraft(**values)  # type: ignore[arg-type]


def certificate(**changes: object) -> Certificate:
    values: dict[str, object] = dict(
        certificate_number="MX26-00000001", issuing_country="MX", tpl_number="9823.53.01", htsus_number="6109100012",
        goods_description="T-shirts", quantity=Decimal(1200), unit="DOZ", importer_of_record="12-345678900",
        exporter=Party("e", "a", "t"), producer=Party("p", "a", "t"), quota_year=2026,
        issue_date=dt.date(2026, 2, 20), last_valid_date=dt.date(2026, 12, 31), invoice_number="I-1",
    )
    values.update(changes)
    return Certificate(**values)  # type: ignore[arg-type]


def level(limit: str, charged: str = "0", tpl: str = "9823.53.01") -> Level:
    return Level(tpl, 2026, "TPL", "SME", Decimal(limit), Decimal(charged), None,
                 dt.datetime(2026, 1, 1, 5, tzinfo=UTC), dt.datetime(2027, 1, 1, 5, tzinfo=UTC))


# -- entry numbers -----------------------------------------------------------------------------------


def test_check_digit_makes_the_number_verify_and_catches_single_changes():
    number = make_entry_number("B76", 1234567)
    assert canonical_entry_number(number) == number
    assert canonical_entry_number(number.replace("-", "")) == number  # hyphens are optional
    body, check = number[:-1], int(number[-1])
    for wrong in range(10):
        if wrong != check:
            assert canonical_entry_number(f"{body}{wrong}") is None
    # Changing any one digit of the transaction number changes the check digit (mod-10 doubling).
    for position in range(7):
        digits = list("1234567")
        digits[position] = str((int(digits[position]) + 1) % 10)
        assert check_digit("B76" + "".join(digits)) != check


# CBP ruling HQ H005628 (4 September 2007; Protest 4601-06-102618, Acciaierie Valbruna): the entry
# numbers in its table of protested entries, in the ruling's order. The ruling says the protest covers
# 18 entries; the published text we could read lists these 14 in full and breaks off in the 15th, so
# the last 4 are not here. Three carry an asterisk in the ruling's table (002-6110316-2,
# 002-6110240-4, 002-6110467-3), which is not part of the number and is dropped here.
HQ_H005628_ENTRIES = (
    "002-6110316-2", "002-6111115-7", "002-6111223-9", "002-6111109-0", "002-6111082-9",
    "002-6110748-6", "002-6111267-6", "002-6110711-4", "002-6111447-4", "002-6110706-4",
    "002-6111495-3", "002-6110240-4", "002-6111224-7", "002-6110467-3",
)


@pytest.mark.parametrize(("number", "valid"), [
    ("B76-0324527-8", True),  # ACE CATAIR Appendix E, the worked example (a letter in the filer code)
    *((number, True) for number in HQ_H005628_ENTRIES),  # ruling HQ H005628, entries under protest
    ("551-3518786-6", True),  # CIT Slip Op. 06-144
    ("551-2518786-6", False),  # the same opinion's mistyped number: its check digit does not verify
])
def test_published_entry_numbers_verify_as_published(number: str, valid: bool):
    assert (canonical_entry_number(number) == number) is valid
    digits = number.replace("-", "")
    assert (check_digit(digits[:10]) == int(digits[10])) is valid


def test_letters_in_the_filer_code_count():
    assert check_digit("A761234567") != check_digit("B761234567")
    assert canonical_entry_number("000-1234567-" + str(check_digit("0001234567"))) is None  # no filer code 000


def test_presentation_time_is_the_latest_of_the_three():
    line, _ = validate_entry_line(draft(), ENTRY_TYPES)
    assert line is not None and line.presentation_time() == T0 + dt.timedelta(hours=1)
    withdrawal, _ = validate_entry_line(draft(entry_type="38", arrived_at=T0 + dt.timedelta(days=9)), ENTRY_TYPES)
    assert withdrawal is not None and withdrawal.presentation_time() == T0  # arrival does not count


def test_invalid_lines_report_every_field():
    line, findings = validate_entry_line(draft(spi="", quantity="0", entry_type="21", filed_at=None, paid_at=None), ENTRY_TYPES)
    assert line is None
    assert {(f.field, f.code) for f in findings} == {
        ("line.spi", "FIELD_REQUIRED"), ("line.quantity", "QUANTITY_NOT_POSITIVE"),
        ("line.entry_type", "ENTRY_TYPE_NOT_QUOTA"), ("line.filed_at", "FIELD_REQUIRED"), ("line.paid_at", "FIELD_REQUIRED"),
    }


@pytest.mark.parametrize(("entry_type", "admitted"), [
    *((t, True) for t in ("02", "06", "07", "12", "23", "32", "38", "52")),
    *((t, False) for t in ("01", "03", "11", "31", "34", "21")),
])
def test_only_the_quota_entry_types_of_the_program_carry_a_tpl_claim(entry_type: str, admitted: bool):
    # CBP Quota Bulletins QB 22-111 and QB 24-111 (USMCA TPLs, Mexico): entry type code 02, 06, 07, 12,
    # 23, 32, 38 or 52. An ordinary consumption entry (01) was granted the TPL rate at 99d2b8c.
    changes: dict[str, object] = {"entry_type": entry_type}
    if entry_type in ("32", "38"):
        changes["arrived_at"] = None  # a withdrawal from warehouse has no arrival time
    line, findings = validate_entry_line(draft(**changes), ENTRY_TYPES)
    assert (line is not None) is admitted
    if not admitted:
        assert [(f.field, f.code) for f in findings] == [("line.entry_type", "ENTRY_TYPE_NOT_QUOTA")]


def test_a_line_without_payment_is_not_presented_for_quota():
    # 19 CFR 132.11 (QB 16-128): presentation needs estimated duties paid (or a statement date); a line
    # with no payment time was granted at 99d2b8c.
    line, findings = validate_entry_line(draft(paid_at=None), ENTRY_TYPES)
    assert line is None and [(f.field, f.code) for f in findings] == [("line.paid_at", "FIELD_REQUIRED")]


def test_the_packaged_entry_types_come_from_the_reference_data_and_cite_the_bulletins():
    document = json.loads(PACKAGED.read_text(encoding="utf-8"))
    assert "QB 22-111" in document["entry_types"]["source"] and "QB 24-111" in document["entry_types"]["source"]
    assert ENTRY_TYPES.without_arrival == {"32", "38"} <= ENTRY_TYPES.quota


# -- matching --------------------------------------------------------------------------------------------


def test_matching_line_passes_screening():
    line, _ = validate_entry_line(draft(), ENTRY_TYPES)
    assert line is not None
    on_file = CertificateOnFile(certificate(), 1, CertificateStatus.ACTIVE, Decimal(1200))
    assert screen(line, MX, on_file).passed


def test_six_digit_certificate_htsus_covers_ten_digit_entry_numbers():
    line, _ = validate_entry_line(draft(), ENTRY_TYPES)
    assert line is not None
    assert mismatches(line, certificate(htsus_number="610910")) == []
    assert [m.field for m in mismatches(line, certificate(htsus_number="610990"))] == ["htsus_number"]


@pytest.mark.parametrize(
    "on_file,decision,reason",
    [
        (None, Decision.MFN_REQUIRED, "NO_TRANSMISSION"),
        (CertificateOnFile(certificate(), 2, CertificateStatus.CANCELED, Decimal(1200)), Decision.MFN_REQUIRED, "CERTIFICATE_CANCELED"),
        (CertificateOnFile(certificate(), 1, CertificateStatus.ACTIVE, Decimal(0)), Decision.MFN_REQUIRED, "CERTIFICATE_EXHAUSTED"),
        (CertificateOnFile(certificate(), 1, CertificateStatus.ACTIVE, Decimal(99)), Decision.MFN_REQUIRED, "QUANTITY_EXCEEDS_CERTIFICATE"),
    ],
)
def test_screening_refusals(on_file, decision, reason):
    line, _ = validate_entry_line(draft(), ENTRY_TYPES)
    assert line is not None
    result = screen(line, MX, on_file)
    assert (result.decision, result.reasons) == (decision, (reason,))


def test_entries_before_the_effective_date_need_no_ecert():
    line, _ = validate_entry_line(draft(date_of_importation="2021-10-04"), ENTRY_TYPES)
    assert line is not None and screen(line, MX, None).decision is Decision.ECERT_NOT_REQUIRED


# -- quota -------------------------------------------------------------------------------------------------


def test_first_come_grants_all_then_cuts_to_whole_units_then_nothing():
    assert grant_first_come(Decimal(10), Decimal("6.0"), Decimal(100)).quantity == 10
    cut = grant_first_come(Decimal(10), Decimal("6.0"), Decimal(59))
    assert (cut.quantity, cut.measure) == (Decimal(9), Decimal("54.0"))
    assert grant_first_come(Decimal(10), Decimal("6.0"), Decimal(5)).quantity == 0


def test_allocation_takes_the_tightest_level_and_names_it():
    line, _ = validate_entry_line(draft(), ENTRY_TYPES)
    assert line is not None
    conversion = convert(ConversionTable("v1", "s", {"338": Category("338", "", "DOZ", Decimal(6))}, {"6109100012": "338"}),
                         line.quantity, "DOZ", line.htsus_number, "SME")
    member, aggregate = level("1000"), level("100", tpl="9823.53.03")
    result = allocate(line, conversion, QuotaContext([member, aggregate], T0, opened=True))
    assert (result.decision, result.reasons, result.grant.quantity) == (Decision.PARTIAL, ("AGGREGATE_FILLED", "PARTIAL_FILL"), Decimal(16))


def _presented(at: dt.datetime):  # type: ignore[no-untyped-def]
    line, _ = validate_entry_line(draft(filed_at=at - dt.timedelta(hours=1), arrived_at=at - dt.timedelta(hours=1), paid_at=at), ENTRY_TYPES)
    assert line is not None
    return line


def test_the_opening_window_queues_lines_at_the_opening_moment_and_refuses_earlier_ones():
    # QB 24-111: the 2024 period opened on its first business day, Tuesday 2 January 2024; lines
    # presented from 00:00 to 12:00 noon Eastern that day are batched with the opening moment's time stamp,
    # 12:00 ET (QB 16-128), and decided together; presented before the opening date, no quota status.
    opens = dt.datetime(2024, 1, 2, 5, tzinfo=UTC)  # 00:00 Eastern
    noon = dt.datetime(2024, 1, 2, 17, tzinfo=UTC)
    member = Level("9823.53.01", 2024, "TPL", "SME", Decimal(1000), Decimal(0), None, opens,
                   dt.datetime(2025, 1, 1, 5, tzinfo=UTC), noon)
    conversion = convert(ConversionTable("v1", "s", {}, {}), Decimal(100), "M2", "", "SME")
    before = allocate(_presented(opens - dt.timedelta(seconds=1)), conversion, QuotaContext([member], opens, opened=False))
    assert (before.decision, before.reasons, before.grant.quantity) == (Decision.MFN_REQUIRED, ("PRESENTED_BEFORE_OPENING",), 0)
    inside = _presented(noon - dt.timedelta(seconds=1))
    queued = allocate(inside, conversion, QuotaContext([member], noon - dt.timedelta(seconds=1), opened=False))
    assert queued.decision is Decision.QUEUED and queued.presentation_time == noon  # the opening moment's time stamp
    straggler = allocate(inside, conversion, QuotaContext([member], noon + dt.timedelta(hours=1), opened=True))
    assert straggler.decision is Decision.PREFERENTIAL and straggler.presentation_time == noon
    after = allocate(_presented(noon), conversion, QuotaContext([member], noon, opened=True))
    assert after.decision is Decision.PREFERENTIAL and after.presentation_time == noon


def test_during_the_opening_review_window_lines_join_the_batch_and_later_ones_wait_pending():
    # DESIGN.md section 1 quoting QB 16-128: opening-moment entries are batched at 12:00 ET, and
    # headquarters then has three business days to review. Under a program's review delay the period
    # has not opened at noon: a line presented in the window but sent during the review still joins the
    # opening batch (QUEUED); one presented after the window comes after that whole batch, so it waits,
    # PENDING, for the first cutoff batch once the opening is final (19 CFR 132.12: presentation order).
    opens = dt.datetime(2027, 1, 4, 5, tzinfo=UTC)  # Monday 4 January 2027, 00:00 Eastern
    noon = dt.datetime(2027, 1, 4, 17, tzinfo=UTC)
    member = Level("9823.53.01", 2027, "TPL", "SME", Decimal(1000), Decimal(0), None, opens,
                   dt.datetime(2028, 1, 1, 5, tzinfo=UTC), noon)
    conversion = convert(ConversionTable("v1", "s", {}, {}), Decimal(100), "M2", "", "SME")
    reviewing = QuotaContext([member], noon + dt.timedelta(days=1), opened=False, under_review=True)
    late_in_window = allocate(_presented(noon - dt.timedelta(minutes=30)), conversion, reviewing)
    assert (late_in_window.decision, late_in_window.reasons, late_in_window.presentation_time) == (
        Decision.QUEUED, ("PERIOD_NOT_YET_OPEN",), noon)
    after_window = allocate(_presented(noon + dt.timedelta(hours=2)), conversion, reviewing)
    assert (after_window.decision, after_window.reasons, after_window.grant.quantity) == (
        Decision.PENDING, ("OPENING_UNDER_REVIEW",), 0)
    assert after_window.presentation_time == noon + dt.timedelta(hours=2)  # its own time: after the batch
    # It does not put its level on hold itself (the opening does as it completes); one pending near fill does.
    assert not holds_its_level(after_window.decision.value, after_window.reasons)
    assert holds_its_level(Decision.PENDING.value, ("LEVEL_ON_HOLD",)) and not holds_its_level(Decision.QUEUED.value, ())
    # Without a review the same line, once the period opened, is decided at once.
    assert allocate(_presented(noon + dt.timedelta(hours=2)), conversion, QuotaContext([member], noon + dt.timedelta(days=1), opened=True)).decision is Decision.PREFERENTIAL


def test_the_opening_is_final_after_the_review_and_its_offers_run_from_then():
    # QB 16-128: three business days of headquarters' review after the 12:00 ET opening moment; CSMS
    # 16-000886: five business days to accept a prorated offer. 2027: the window closes Monday 4 January
    # at noon Eastern; three business days later is Thursday 7 January, noon; five business days after
    # that is Thursday 14 January, so offers lapse at its end (00:00 Eastern on Friday 15 January).
    # Without a review: final as the window closes, offers to the end of Monday 11 January.
    eastern = ZoneInfo("America/New_York")
    reviewed = QuotaCalendar(eastern, Decimal("0.9"), lambda: OpeningRule(review_business_days=3))
    assert reviewed.window_closes(2027) == dt.datetime(2027, 1, 4, 17, tzinfo=UTC)
    assert reviewed.opening_final(2027) == dt.datetime(2027, 1, 7, 12, tzinfo=eastern)
    assert reviewed.offer_expires(2027) == dt.datetime(2027, 1, 15, tzinfo=eastern)
    prompt = QuotaCalendar(eastern, Decimal("0.9"), OpeningRule)
    assert prompt.opening_final(2027) == prompt.window_closes(2027) == dt.datetime(2027, 1, 4, 17, tzinfo=UTC)
    assert prompt.offer_expires(2027) == dt.datetime(2027, 1, 12, tzinfo=eastern)

def test_conversion_names_its_version_and_refuses_unknown_goods():
    table = ConversionTable("v7", "s", {"338": Category("338", "", "DOZ", Decimal("6.0"))}, {"6109100012": "338"})
    assert convert(table, Decimal(10), "DOZ", "6109100012", "SME").measure == Decimal(60)
    assert convert(table, Decimal(10), "KG", "5205110000", "KG").factor == 1  # kilograms for a level in kilograms
    with pytest.raises(DomainError) as caught:
        convert(table, Decimal(10), "DOZ", "6201301000", "SME")
    assert caught.value.reason == "CONVERSION_FACTOR_MISSING" and caught.value.metadata["factor_version"] == "v7"


# -- post-importation window ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "imported,deadline",
    [("2025-03-10", "2026-03-10"), ("2024-02-29", "2025-02-28"), ("2023-03-01", "2024-03-01"), ("2025-12-31", "2026-12-31")],
)
def test_post_importation_deadline_is_the_same_date_a_year_on(imported, deadline):
    assert post_importation_deadline(dt.date.fromisoformat(imported)) == dt.date.fromisoformat(deadline)


def test_post_importation_window_day_365_in_and_day_366_out():
    imported = dt.date(2025, 1, 10)
    check_post_importation_window(imported, imported + dt.timedelta(days=365))
    with pytest.raises(DomainError) as caught:
        check_post_importation_window(imported, imported + dt.timedelta(days=366))
    assert caught.value.reason == "POST_IMPORTATION_WINDOW_CLOSED"


def test_a_claim_holds_its_grant_or_while_queued_all_it_asked():
    from server.domain.records import ClaimRecord

    record = ClaimRecord(
        "C-1", "B76-1234567-1", 1, 1, "d", "B76", "12-345678900", "MX", "MX26-00000001", 1, "9823.53.01", 2026,
        "QUEUED", (), (), Decimal(100), "DOZ", Decimal(600), "SME", "6.0", "v1", Decimal(0), Decimal(0),
        None, None, None, T0, T0, False, "", None, None,
    )
    assert record.held_on_certificate == 100
    from dataclasses import replace

    partial = replace(record, decision="PARTIAL", granted_quantity=Decimal(92), granted_measure=Decimal(552))
    assert (partial.held_on_certificate, partial.mfn_quantity, partial.mfn_measure) == (92, 8, 48)


def test_nothing_is_charged_to_a_period_before_it_opens_whatever_instants_the_claim_carries():
    # Issue 12, finding 2: a claim whose instants all lie in January of next year, decided on
    # 29 November, was charged to next year's level at once. 19 CFR 132.11(d): presentation before
    # the opening gives no quota status; whether the period has opened is the service's fact
    # (`opened`), never the request's.
    line, _ = validate_entry_line(draft(
        date_of_importation="2026-01-05", filed_at=dt.datetime(2026, 1, 5, 14, tzinfo=UTC),
        arrived_at=dt.datetime(2026, 1, 5, 15, tzinfo=UTC), paid_at=dt.datetime(2026, 1, 5, 16, tzinfo=UTC),
    ), ENTRY_TYPES)
    assert line is not None
    conversion = convert(ConversionTable("v1", "s", {}, {}), line.quantity, "M2", "", "SME")
    member = level("1000")
    assert line.presentation_time() > member.opens_at
    before = allocate(line, conversion, QuotaContext([member], dt.datetime(2025, 11, 29, tzinfo=UTC), opened=False))
    assert (before.decision, before.grant.measure) == (Decision.QUEUED, Decimal(0))
    post = allocate(line, conversion, QuotaContext([member], dt.datetime(2025, 11, 29, tzinfo=UTC), opened=False, post_importation=True))
    assert (post.decision, post.grant.measure) == (Decision.QUEUED, Decimal(0))


def test_a_correction_keeps_its_slot_only_for_what_the_line_held():
    # CSMS 13-000217 (a resubmitted entry summary gets a new presentation time); DESIGN.md section 1.
    original = T0 - dt.timedelta(days=3)
    assert corrected_presentation(Decimal(100), Decimal(80), original) == original
    assert corrected_presentation(Decimal(100), Decimal(100), original) == original
    assert corrected_presentation(Decimal(100), Decimal("100.5"), original) is None  # an increase
    assert corrected_presentation(Decimal(0), Decimal(10), original) is None  # refused: nothing held


# -- business days -------------------------------------------------------------------------------------


@pytest.mark.parametrize("year,opening", [
    (2024, dt.date(2024, 1, 2)),  # QB 24-111: "Opening Date: Tuesday, January 2, 2024" (1 January a Monday holiday)
    (2027, dt.date(2027, 1, 4)),  # 1 January 2027 a Friday holiday, then a weekend (5 U.S.C. 6103)
    (2022, dt.date(2022, 1, 3)),  # 1 January 2022 a Saturday (observed Friday 31 December 2021)
])
def test_the_opening_date_is_the_first_business_day(year: int, opening: dt.date):
    assert first_business_day(year) == opening


def test_business_days_skip_weekends_and_federal_holidays():
    # Five business days after Monday 4 January 2027 is Monday 11 January; counted from Tuesday 14
    # January 2025 they are 15, 16, 17, 21 and 22 January: Monday 20 January 2025 was Martin Luther King
    # Jr. Day (and Inauguration Day), a federal holiday.
    assert add_business_days(dt.date(2027, 1, 4), 5) == dt.date(2027, 1, 11)
    assert add_business_days(dt.date(2025, 1, 14), 5) == dt.date(2025, 1, 22)  # 15, 16, 17, (20 MLK), 21, 22
    assert not is_business_day(dt.date(2025, 1, 20)) and is_business_day(dt.date(2025, 1, 21))


def test_the_opening_rule_is_reference_data_and_a_bad_one_is_refused():
    document = json.loads(PACKAGED.read_text(encoding="utf-8"))
    assert load_reference_data().opening == OpeningRule(True, dt.time(12), True)  # usmca-mx: QB 24-111
    for bad in ({"date": "easter"}, {"before_opening": "queued"}, {"window_ends": "noon"}, {"review_business_days": -1},
                {"review_business_days": 11}, {"review_business_days": "3"}, {"review_business_days": True},
                {"review_business_days": 2.5}):
        with pytest.raises(ValueError):
            parse_reference_data({**document, "opening": bad})
    reviewed = parse_reference_data({**document, "opening": {"review_business_days": 3}}).opening
    assert reviewed == OpeningRule(True, dt.time(12), True, review_business_days=3)  # QB 16-128: three business days


def test_the_status_a_claim_is_screened_with():
    # The version on file at presentation decides (eCERT notice), except that a cancellation withdraws
    # the certificate whenever it came; a replacement after presentation does not.
    active, canceled = CertificateStatus.ACTIVE, CertificateStatus.CANCELED
    assert status_at_presentation(active, active) is active
    assert status_at_presentation(active, canceled) is canceled
    assert status_at_presentation(canceled, canceled) is canceled
