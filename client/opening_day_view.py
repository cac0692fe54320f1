"""`ecert demo --opening-day`'s report as text tables (rich), each step with what it expected."""
from __future__ import annotations

import datetime as dt
from collections import Counter

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gateway_sim.opening_day import DEADLINE, EASTERN, NOON, OPENING, TPL, YEAR, OpeningDayReport, Step, eastern, units


def _short(at: dt.datetime | None) -> str:
    """'4 Jan 08:15' (Eastern; the step's title gives the year)."""
    if at is None:
        return ""
    local = at.astimezone(EASTERN)
    return f"{local.day} {local:%b %H:%M}"


def _step(console: Console, number: int, step: Step) -> None:
    console.print()
    console.print(f"[bold]{number}. {escape(step.title)}[/]  [dim]clock: {escape(step.clock)}[/]")
    if step.rows:
        table = Table(title_justify="left")
        for column in ("line", "presented", "ranked as", "asked", "decision", "granted", "reasons"):
            table.add_column(column, justify="right" if column in ("asked", "granted") else "left")
        for row in step.rows:
            table.add_row(f"{row.importer} {row.entry}", _short(row.presented), _short(row.ranked_at), row.asked, row.decision,
                          row.granted, row.reasons)
        console.print(table)
    for row in step.rows:
        if row.note:
            console.print(f"  {row.importer}: {escape(row.note)}")
    for note in step.notes:
        console.print(f"  {escape(note)}", style="dim")
    for check in step.checks:
        mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
        seen = f" [red](service: {escape(check.seen)})[/]" if check.seen else ""
        console.print(f"  {mark} {escape(check.expectation)}{seen}")


def render_opening_day(console: Console, report: OpeningDayReport) -> None:
    console.print()
    console.print(f"[bold]Opening day[/] of TPL 1 ({TPL}), quota year {YEAR}, on customs' simulated clock")
    console.print(f"  level {units(report.level)} {report.measure_unit}, test-sized: {escape(report.reference_loaded)}")
    console.print(f"  opening date {OPENING:%A} {OPENING.day} {OPENING:%B %Y}, window {OPENING:%H:%M} to {NOON:%H:%M} noon Eastern; "
                  f"offers open until {eastern(DEADLINE)}")
    if report.factor is not None:
        console.print(f"  knit shirts 6109.10.0012: {report.factor} {report.measure_unit} a dozen "
                      f"(an illustrative factor, table {escape(report.factor_version)})")
    if report.transmitted:
        outcomes = ", ".join(f"{name} {n}" for name, n in sorted(Counter(outcome for *_, outcome in report.transmitted).items()))
        console.print(f"  Mexico transmitted {len(report.transmitted)} certificates of 500 DOZ on {eastern(report.transmitted_at)} "
                      f"({outcomes}), one to each importer:")
        for importer in report.importers.values():
            console.print(f"    {importer.key} {importer.name}, importer of record {importer.number}, certificate {importer.certificate}")

    for number, step in enumerate(report.steps, start=1):
        _step(console, number, step)

    if report.levels:
        console.print()
        levels = Table(title=f"TPL 1 {YEAR} after each step", title_justify="left")
        for column in ("after", "charged", "remaining", "fill", "state"):
            levels.add_column(column, justify="left" if column in ("after", "state") else "right")
        for point in report.levels:
            fill = f"{float(point.charged / report.level) * 100:.1f}%" if report.level else ""
            levels.add_row(escape(point.after), units(point.charged), units(point.remaining), fill, point.state)
        console.print(levels)
    if report.reconcile:
        console.print(f"  ecert audit reconcile: {escape(report.reconcile)}")
    if report.failure:
        console.print(f"[red]error:[/] {escape(report.failure)}")
    failed = sum(not c.ok for s in report.steps for c in s.checks)
    verdict = "[green]OK[/]" if report.ok else f"[red]INCOMPLETE[/] ({failed} check(s) failed)"
    console.print(f"{verdict} in {report.seconds:.1f} s")
