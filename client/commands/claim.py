"""`ecert claim`: customs systems file, check, reverse and look up TPL claims on entry summary lines.

A line is a JSON object with the fields of ecert.v1.EntrySummaryLine (proto names; instants as
RFC 3339 text), or a list of them; `ecert claim example` prints one (README, "Claim lines as JSON"). The service decides; a decision without preference (MFN) is an
answer, not an error, so it exits 0.
"""
from __future__ import annotations

import datetime as dt

import pathlib
from typing import Any, Optional

import typer
from google.protobuf import json_format
from rich.table import Table

from client.commands import common
from client.sdk import ClaimResult, CustomsClient, EntryLine

app = typer.Typer(help="TPL claims on entry summary lines: file, check, reverse, get.", no_args_is_help=True)


def read_lines(path: pathlib.Path) -> list[EntryLine]:
    data = common.load_json(path)
    items = data if isinstance(data, list) else [data]
    lines = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise common.BadInput(f"line {n}: expected a JSON object")
        try:
            lines.append(EntryLine.from_dict(item))
        except json_format.ParseError as error:
            raise common.BadInput(f"line {n}: {error}") from None
    if not lines:
        raise common.BadInput(f"{path}: no entry summary lines")
    return lines


# One entry summary line as `ecert claim file` and `check` read it: every field the service requires, plus
# filer_code, which is optional (the entry number's first three characters). It claims TPL 1 on the README
# partner example's certificate MX26-00004242 (1200 dozen knit shirts). `ecert claim example` stamps
# filing and payment with the moment it runs: the line is presented then, so a certificate transmitted
# before counts for it, and one transmitted later does not (eCERT notice: the transmission must be on
# file upon entry summary).
EXAMPLE_LINE: dict[str, Any] = {
    "entry_number": "B76-0000001-5",
    "line_number": 1,
    "filer_code": "B76",
    "importer_of_record": "12-345678900",
    "entry_type": "02",
    "country_of_origin": "MX",
    "htsus_number": "6109.10.0012",
    "tpl_number": "9823.53.01",
    "spi": "S+",
    "certificate_number": "MX26-00004242",
    "quantity": "100",
    "unit": "DOZ",
    "date_of_importation": "2026-03-01",
    "filed_at": "2026-03-02T12:00:00Z",
    "arrived_at": "2026-03-01T09:00:00Z",
    "paid_at": "2026-03-02T13:00:00Z",
}


def _quantity(value: Any, unit: str) -> str:
    return f"{common.fmt(value)} {unit}".strip() if value is not None else ""


def results_table(results: list[tuple[str, ClaimResult]], title: str = "") -> Table:
    table = Table("entry", "line", "decision", "granted", "MFN", "measure", "level left", "reasons", title=title or None)
    for note, r in results:
        reasons = ", ".join(r.reasons)
        if r.mismatches:
            reasons += ("; " if reasons else "") + ", ".join(f"{m.field}: {m.claimed} vs {m.transmitted}" for m in r.mismatches)
        table.add_row(
            r.entry_number, str(r.line_number), common.fmt(r.decision) + note, _quantity(r.granted_quantity, r.unit),
            _quantity(r.mfn_quantity, r.unit), _quantity(r.granted_measure, r.measure_unit),
            _quantity(r.level_remaining, r.measure_unit), reasons,
        )
    return table


def _client(target: Optional[str], insecure: bool, tls_dir: Optional[pathlib.Path], timeout: Optional[float]) -> CustomsClient:
    return CustomsClient(common.settings(target, insecure, tls_dir, timeout))


@app.command()
def example() -> None:
    """Print one entry summary line as JSON, ready for `ecert claim check` or `file` (edit its values);
    it is filed and paid (presented) now."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    stamp = lambda at: at.isoformat().replace("+00:00", "Z")  # noqa: E731
    common.print_json({**EXAMPLE_LINE, "filed_at": stamp(now - dt.timedelta(hours=1)), "paid_at": stamp(now)})


@app.command("file")
@common.handle_errors
def file_(
    lines_file: pathlib.Path = typer.Argument(..., help="entry summary line(s) as JSON, or '-' for stdin"),
    post_importation: bool = typer.Option(False, "--post-importation", help="a refund claim for a line that paid MFN"),
    as_json: bool = common.JSON,
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """Decide and charge each line (filing the same line again returns its original decision)."""
    lines = read_lines(lines_file)
    with _client(target, insecure, tls_dir, timeout) as client:
        decide = client.file_post_importation_claim if post_importation else client.match_claim
        outcomes = [decide(line) for line in lines]
    if as_json:
        return common.print_json(outcomes)
    common.out.print(results_table([(" (replayed)" if o.replayed else "", o.result) for o in outcomes]))


@app.command()
@common.handle_errors
def check(
    lines_file: pathlib.Path = typer.Argument(..., help="entry summary line(s) as JSON, or '-' for stdin"),
    as_json: bool = common.JSON,
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """The decision each line would get now; nothing is charged or recorded."""
    lines = read_lines(lines_file)
    with _client(target, insecure, tls_dir, timeout) as client:
        results = [client.check_claim(line) for line in lines]
    if as_json:
        return common.print_json(results)
    common.out.print(results_table([("", r) for r in results], title="dry run: nothing charged"))


@app.command()
@common.handle_errors
def reverse(
    entry_number: str = typer.Argument(..., help="XXX-NNNNNNN-C"),
    line_number: int = typer.Argument(...),
    corrected: Optional[pathlib.Path] = typer.Option(None, "--corrected", help="the corrected line (JSON): decided again with the original priority"),
    reason: str = typer.Option("", "--reason", help="why, for the record"),
    as_json: bool = common.JSON,
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """Give a line's charge back to its certificate and level (canceled, or corrected with --corrected)."""
    corrected_line = None
    if corrected is not None:
        found = read_lines(corrected)
        if len(found) != 1:
            raise common.BadInput("--corrected takes exactly one line")
        corrected_line = found[0]
    with _client(target, insecure, tls_dir, timeout) as client:
        reversal = client.reverse_claim(entry_number, line_number, corrected_line=corrected_line, reason=reason)
    if as_json:
        return common.print_json(reversal)
    rows = [(" (reversed)", reversal.reversed)] + ([(" (corrected)", reversal.corrected)] if reversal.corrected else [])
    common.out.print(results_table(rows))


@app.command("answer-offer")
@common.handle_errors
def answer_offer(
    entry_number: str = typer.Argument(..., help="XXX-NNNNNNN-C"),
    line_number: int = typer.Argument(...),
    accepted_quantity: str = typer.Argument(..., help="whole units of the goods to accept, 0 to decline"),
    as_json: bool = common.JSON,
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """Answer a line's prorated opening offer (PRORATED_OFFER): accept all, part or none of it before it lapses."""
    with _client(target, insecure, tls_dir, timeout) as client:
        outcome = client.answer_prorated_offer(entry_number, line_number, accepted_quantity)
    if as_json:
        return common.print_json(outcome)
    common.out.print(results_table([(" (replayed)" if outcome.replayed else "", outcome.result)]))


@app.command()
@common.handle_errors
def get(
    entry_number: str = typer.Argument(..., help="XXX-NNNNNNN-C"),
    line_number: int = typer.Argument(...),
    as_json: bool = common.JSON,
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """The recorded decision of one entry summary line."""
    with _client(target, insecure, tls_dir, timeout) as client:
        result = client.get_claim(entry_number, line_number)
    if as_json:
        return common.print_json(result)
    common.out.print(results_table([(" (reversed)" if result.reversed else "", result)]))
    common.out.print(
        f"TPL {result.tpl_number} {result.quota_year}; claimed {_quantity(result.claimed_quantity, result.unit)} = "
        f"{_quantity(result.claimed_measure, result.measure_unit)} (factor {common.fmt(result.conversion_factor)}, "
        f"{result.factor_version}); presented {common.fmt(result.presentation_time)}", markup=False,
    )
