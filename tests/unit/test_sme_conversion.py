"""SME conversion by the textile category of the 10-digit HTSUS statistical line (issue 13, item 7).

Categories pinned here are the numbers printed in parentheses beside each statistical line in the
HTSUS (USITC HTS data, as mirrored in tariffboard/htsdata, htsdata.json at commit 978a6ff9): e.g.
6105.10.00.10 "Men's (338)", 6110.20.20.10 "Men's (345)" under "Sweaters:", 6110.20.20.79 "Other
(339)" under "Women's or girls':", 6115.95.90.00 "Other (332)" counted in "doz. prs.". Factors pinned
here are the illustrative figures the table names as its own (DESIGN.md section 1, issue 13: knit
shirts 6.0, sweaters 30.8, woven shirts 20.1 SME per dozen); no current source for a factor was found.
"""
from __future__ import annotations

import copy
import json
from decimal import Decimal

import pytest

from server.adapters.reference_files import (
    PACKAGED,
    PACKAGED_CONVERSION,
    load_reference_data,
    parse_conversion_table,
)
from server.domain.certificate import normalize_htsus
from server.domain.conversion import (
    NO_CATEGORY_FOR_LINE,
    NO_FACTOR_FOR_CATEGORY,
    NOT_A_STATISTICAL_LINE,
    UNIT_NOT_THE_CATEGORY_UNIT,
    Category,
    ConversionTable,
    convert,
)
from server.domain.errors import DomainError, ErrorKind

DOCUMENT = json.loads(PACKAGED_CONVERSION.read_text(encoding="utf-8"))
TABLE = parse_conversion_table(DOCUMENT)
TPLS = load_reference_data(PACKAGED)


def refusal(htsus: str, unit: str = "DOZ", table: ConversionTable = TABLE) -> DomainError:
    with pytest.raises(DomainError) as caught:
        convert(table, Decimal(10), unit, normalize_htsus(htsus), "SME")
    error = caught.value
    assert (error.reason, error.kind) == ("CONVERSION_FACTOR_MISSING", ErrorKind.PRECONDITION)
    assert error.metadata["factor_version"] == table.version and error.metadata["htsus_number"] == normalize_htsus(htsus)
    return error


# -- the packaged correspondence --------------------------------------------------------------------------


def test_every_statistical_line_each_tpl_admits_resolves_to_exactly_one_category():
    """Each listed line is a 10-digit number listed once (the raw document, before any dict could
    hide a repeat), admitted by some fileable TPL, and resolves to one category whose unit that TPL's
    certificates may be issued in; lines in the SME levels resolve to a category the table defines."""
    raw = [normalize_htsus(number) for number, _ in DOCUMENT["statistical_lines"]]
    assert len(raw) == len(set(raw)) == len(TABLE.lines) > 300
    fileable = [tpl for tpl in TPLS.tpls.values() if tpl.fileable]
    for number, code in DOCUMENT["statistical_lines"]:
        line = normalize_htsus(number)
        assert len(line) == 10 and line.isdigit(), number
        admitting = [tpl for tpl in fileable if tpl.htsus_chapters and line.startswith(tpl.htsus_chapters)]
        assert admitting, f"{number} is admitted by no TPL"
        category = TABLE.category_for(line)
        assert category is not None and category.code == code, number
        for tpl in admitting:
            if tpl.measure_unit == "SME":
                assert category.unit in tpl.allowed_units, (number, tpl.label, category.unit)


def test_the_table_says_where_each_factor_comes_from_and_marks_the_illustrative_ones():
    assert "ILLUSTRATIVE" in DOCUMENT["source"] and "978a6ff997ce4a74c7686dceb4f8fa42a97ea146" in DOCUMENT["source"]
    for code, category in DOCUMENT["categories"].items():
        if category["factor"] is None:
            assert category["factor_source"].startswith("none"), code
        else:
            assert category["factor_source"].startswith("ILLUSTRATIVE"), code


@pytest.mark.parametrize(("htsus", "category", "unit"), [
    ("6105.10.0010", "338", "DOZ"),  # 6105.10.00.10 Men's (338): men's or boys' knit shirts, of cotton
    ("6109.10.0012", "338", "DOZ"),  # 6109.10.00.12 Other T-shirts: Men's (338)
    ("6110.20.2010", "345", "DOZ"),  # 6110.20.20 Other: Sweaters: Men's (345)
    ("6110.20.2079", "339", "DOZ"),  # 6110.20.20 Other: Other: Women's or girls': Other (339) -- not a sweater
    ("6110.11.0030", "446", "DOZ"),  # 6110.11.00 Of wool: Sweaters: Women's (446)
    ("6205.20.2016", "340", "DOZ"),  # 6205.20.20 Dress shirts, two or more colors: Men's (340)
    ("6203.42.4511", "347", "DOZ"),  # 6203.42.45 Men's trousers and breeches: Blue denim (347)
    ("6204.62.8011", "348", "DOZ"),  # 6204.62.80 Women's trousers and breeches: Blue denim (348)
    ("6115.95.9000", "332", "DPR"),  # 6115.95.90.00 hosiery of cotton, Other (332), doz. prs.
    ("6116.10.1720", "331", "DPR"),  # 6116.10.17.20 gloves, Subject to cotton restraints (331), doz. prs.
    ("6006.22.9080", "222", "KG"),  # 6006.22.90.80 dyed cotton knit fabric, Other (222), kg
])
def test_published_category_of_a_statistical_line(htsus, category, unit):
    found = TABLE.category_for(normalize_htsus(htsus))
    assert found is not None and (found.code, found.unit) == (category, unit)


def test_a_sweater_and_a_knit_shirt_convert_at_different_factors():
    """6110.20.2010 (men's cotton sweaters, 345) and 6105.10.0010 (men's cotton knit shirts, 338).

    The issue's example 6110.20.2079 is not a sweater in the HTSUS: it is "Other (339)", women's or
    girls' cotton knit tops, so it converts like a knit shirt."""
    sweater = convert(TABLE, Decimal(1), "DOZ", "6110202010", "SME")
    shirt = convert(TABLE, Decimal(1), "DOZ", "6105100010", "SME")
    assert (sweater.category, sweater.factor) == ("345", Decimal("30.8"))
    assert (shirt.category, shirt.factor) == ("338", Decimal("6.0"))
    other_top = convert(TABLE, Decimal(1), "DOZ", "6110202079", "SME")
    assert (other_top.category, other_top.factor) == ("339", Decimal("6.0"))


def test_heading_6110_no_longer_undercounts_its_sweaters():
    """Issue 13: heading 6110 holds knit shirts (6.0 SME/doz) and sweaters (30.8), so mapping the
    heading to the knit-shirt category undercounted 100 dozen sweaters as 600 SME instead of 3,080."""
    sweaters = convert(TABLE, Decimal(100), "DOZ", "6110202010", "SME")
    sweatshirts = convert(TABLE, Decimal(100), "DOZ", "6110202041", "SME")  # 6110.20.20 Sweatshirts: Men's (338)
    assert sweaters.measure == Decimal("3080.0") and sweatshirts.measure == Decimal("600.0")
    assert sweaters.measure / sweatshirts.measure > 5


# -- refusals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("htsus", ["6110.20.20", "6110.20", "611020207"])
def test_a_number_shorter_than_a_statistical_line_is_refused(htsus):
    assert refusal(htsus).metadata["cause"] == NOT_A_STATISTICAL_LINE


@pytest.mark.parametrize("htsus", [
    "6201.30.1000",  # not in the table
    "6005.35.0000",  # a real line printed with no category (fabrics of subheading note 1)
    "6105.90.4000",  # a silk category (738): outside the TPLs' fibers, left out of the table
])
def test_a_line_without_a_category_in_the_table_is_refused(htsus):
    assert refusal(htsus).metadata["cause"] == NO_CATEGORY_FOR_LINE


def test_hosiery_is_counted_in_dozen_pairs_not_dozens():
    error = refusal("6115.95.9000", "DOZ")
    assert (error.metadata["cause"], error.metadata["category"]) == (UNIT_NOT_THE_CATEGORY_UNIT, "332")
    # In dozen pairs it reaches the category, which has no factor on file yet.
    error = refusal("6115.95.9000", "DPR")
    assert (error.metadata["cause"], error.metadata["category"]) == (NO_FACTOR_FOR_CATEGORY, "332")


def test_a_dozen_pairs_category_with_a_factor_converts_by_it():
    """Mechanics only: a stand-in factor of 2 SME per dozen pairs, not a published figure."""
    table = ConversionTable("t", "test", {"332": Category("332", "hosiery", "DPR", Decimal(2))}, {"6115959000": "332"})
    conversion = convert(table, Decimal(15), "DPR", "6115959000", "SME")
    assert (conversion.measure, conversion.category, conversion.version) == (Decimal(30), "332", "t")


def test_identity_units_need_no_category():
    assert convert(TABLE, Decimal(7), "M2", "5208124020", "SME").measure == Decimal(7)
    assert convert(TABLE, Decimal(7), "KG", "5205121000", "KG").factor == Decimal(1)


# -- the loader -------------------------------------------------------------------------------------------


def broken(change) -> str:  # type: ignore[no-untyped-def]
    document = copy.deepcopy(DOCUMENT)
    change(document)
    with pytest.raises(ValueError) as caught:
        parse_conversion_table(document)
    return str(caught.value)


def test_a_line_listed_twice_is_refused_even_with_the_same_category():
    assert "listed twice" in broken(lambda d: d["statistical_lines"].append(["6105.10.0010", "338"]))
    assert "listed twice" in broken(lambda d: d["statistical_lines"].append(["6105100010", "345"]))


def test_malformed_lines_and_categories_are_refused():
    assert "not a 10-digit" in broken(lambda d: d["statistical_lines"].append(["6105.10", "338"]))
    assert "unknown category" in broken(lambda d: d["statistical_lines"].append(["6105.10.0099", "999"]))
    assert "not one of" in broken(lambda d: d["categories"]["338"].update(unit="DZ"))
    assert "not positive" in broken(lambda d: d["categories"]["338"].update(factor="0"))
    assert "3-digit" in broken(lambda d: d["categories"].update({"33": d["categories"]["338"]}))


def test_a_heading_level_table_is_refused():
    assert "htsus_prefixes" in broken(lambda d: d.update(htsus_prefixes={"6110": "338"}))
