"""The quota page in a real headless browser (Debian's chromium): the fill bar moves after a claim."""
from __future__ import annotations

import os
import pathlib

import pytest

from ecert.v1 import match_pb2 as mpb
from ecert.v1 import match_pb2_grpc
from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import transmission_pb2_grpc
from tests.browser.webdriver import Browser, find_browser
from tests.factories import claim_line, envelope, small_levels
from tests.observability.conftest import database_url, server  # noqa: F401 (fixtures: SQLite, metrics port on)

TPL1 = "document.querySelector('tr[data-tpl=\"9823.53.01\"]')"
TPL1_ROW = "return " + TPL1


@pytest.fixture
def browser(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    chromium, chromedriver = find_browser()
    if chromium is None or chromedriver is None:
        why = ("chromium and chromedriver are not both on PATH: install them (Debian, as root: "
               "apt-get install chromium chromium-driver; .ci/run does this when they are missing)")
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {why}")
        pytest.skip(why)
    session = Browser(chromium, chromedriver, tmp_path / "chromium-profile")
    yield session
    session.close()


def test_quota_page_shows_the_fill_change_after_a_claim(server, channel, partner, browser, tmp_path):  # noqa: F811
    server.use_cases.references.load(small_levels("browser-test", {"9823.53.01": "1000"}))
    transmission_pb2_grpc.TransmissionServiceStub(channel).SubmitCertificate(tpb.SubmitCertificateRequest(envelope=envelope(partner.signer)))

    browser.get(f"http://127.0.0.1:{server.http.port}/quota")
    browser.wait_for(TPL1_ROW + " !== null")
    row = TPL1_ROW + ".querySelector('{}')"
    assert browser.run(row.format(".percent") + ".textContent") == "0.00 %"
    assert browser.run(row.format(".fill") + ".style.width") == "0%"
    assert browser.run(TPL1_ROW + ".textContent").startswith("TPL 1")

    match = match_pb2_grpc.MatchServiceStub(channel)
    match.MatchClaim(mpb.MatchClaimRequest(line=claim_line(1, quantity="150")))  # 900 SME of 1000: critical

    # No reload: the page refreshes itself.
    browser.wait_for(TPL1_ROW + ".dataset.fill === '0.9'")
    assert browser.run(row.format(".percent") + ".textContent") == "90.00 %"
    assert browser.run(row.format(".fill") + ".style.width") == "90%"
    assert browser.run(TPL1_ROW + ".className") == "CRITICAL"
    assert browser.run(f"return getComputedStyle({TPL1}.querySelector('.fill')).backgroundColor") == "rgb(191, 135, 0)"  # amber
    browser.screenshot(tmp_path / "quota-page.png")
