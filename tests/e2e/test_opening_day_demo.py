"""`ecert demo --opening-day` end to end (issue 13, item 8): a 2027 opening of TPL 1 on a service with a
simulated clock, as the README runs it. The opening rule follows the quota bulletins (QB 24-111: the
first business day, window to 12:00 noon Eastern); offers follow CSMS 16-000886 (five business days)."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def rows(stdout: str, decision: str) -> list[str]:
    """The table rows (│ ... │) that carry `decision`."""
    return [line for line in stdout.splitlines() if line.startswith("│") and f"│ {decision} " in line]


def test_the_opening_day_demo_plays_every_step_and_reports_it(tmp_path):
    work = tmp_path / "opening"
    done = subprocess.run(
        [sys.executable, "-m", "client.cli", "demo", "--opening-day", "--dir", str(work)],
        capture_output=True, text=True, timeout=120, env={"COLUMNS": "120", "PATH": ""},
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # Every step's expectations held, and the ledger reconciles afterwards.
    assert "✗" not in out and out.count("  ✓ ") == 21
    assert out.strip().splitlines()[-1].startswith("OK in ")
    assert "ecert audit reconcile: ledger balanced" in out
    assert "tpls version ecert-demo-opening-day.1 loaded" in out  # by the operator command, into the service's database
    assert "Mexico transmitted 5 certificates of 500 DOZ on Thu 31 Dec 2026 15:00 EST (ACCEPTED 5)" in out

    # 1. Presented on 31 December and on Saturday 2 January: no quota status.
    refused = rows(out, "MFN_REQUIRED")
    assert [r for r in refused if "PRESENTED_BEFORE_OPENING" in r and "31 Dec 15:00" in r]
    assert [r for r in refused if "PRESENTED_BEFORE_OPENING" in r and "2 Jan 10:00" in r]
    # 2. In the window: queued, ranked at the opening moment whatever the time presented.
    queued = rows(out, "QUEUED")
    assert len(queued) == 3 and all("│ 4 Jan 12:00 │" in r for r in queued)
    assert {r.split("│")[2].strip() for r in queued} == {"4 Jan 08:15", "4 Jan 09:40", "4 Jan 10:00"}
    # 3. Past noon: 1,080 SME asked of 1,000 (6.0 SME a dozen): offers, not grants, with the deadline.
    assert "knit shirts 6109.10.0012: 6.0 SME a dozen" in out
    offers = rows(out, "PRORATED_OFFER")
    assert [r.split("│")[6].strip() for r in offers] == ["offered 92", "offered 46", "offered 27"]
    assert "offers open until Tue 12 Jan 2027 00:00 EST" in out
    # 4. A accepts 60 of its 92 (granted, with the opening moment as its presentation time); B declines.
    accepted = [r for r in rows(out, "PARTIAL") if "OFFER_ACCEPTED" in r]
    assert len(accepted) == 1 and "│      60 │" in accepted[0] and "│ 4 Jan 12:00 │" in accepted[0]
    assert [r for r in refused if "PRORATED, OFFER_DECLINED" in r]
    # 5. Past the deadline, C's offer lapses by the service's timer; a late answer is refused.
    assert [r for r in refused if "PRORATED, OFFER_LAPSED" in r]
    assert "C answers late: FailedPrecondition OFFER_LAPSED" in out
    # 6. Near fill (19 CFR 132.11): presentation order decides at the cutoff, not arrival. E, presented
    # later, arrives first; both wait; D (09:10) gets all 91 dozen, E (09:40) the 15 left (94 SME).
    near = [r for r in out.splitlines() if r.startswith("│ E ") or r.startswith("│ D ")]
    assert len(near) == 2 and "LEVEL_FILLED, PARTIAL_FILL" in near[0] and "12 Jan 09:40" in near[0] and "│      15 │" in near[0]
    assert "PREFERENTIAL" in near[1] and "12 Jan 09:10" in near[1] and "│      91 │" in near[1]
    # The level after each step: reserved at noon, given back by the answers and the lapse, nearly filled.
    level = {r.split("│")[1].strip(): r.split("│")[2].strip() for r in out.splitlines() if r.startswith("│") and r.count("│") == 6}
    assert [level[k] for k in ("2. window (queued)", "3. noon batch (offers reserved)", "4. A accepts part, B declines",
                               "5. C's offer lapsed", "6. near fill")] == ["0", "990", "522", "360", "996"]
    # A real service on a simulated clock, started and stopped by the demo.
    log = (work / "service" / "service.log").read_text()
    assert "SIMULATED clock starting at 2026-12-31T20:00:00" in log
    assert '"event": "stopped"' in log
