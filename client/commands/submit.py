"""`ecert submit`: a partner transmits certificates from a JSON or CSV file, signed with its key.

JSON: a list (or {"certificates": [...]}) of certificates with the proto's field names, or of
{"certificate": {...}, "action": "replace", "replaces_version": 1, "message_id": "..."} items.
CSV: one certificate per row, header of the same field names; parties as exporter_name,
exporter_address, exporter_tax_id, producer_...; optional action, replaces_version, message_id.
Every row is sent even when others are refused; the summary counts outcomes and the exit status
is 1 if any row was refused.
"""
from __future__ import annotations

import csv
import pathlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

import typer
from google.protobuf import json_format
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from client.commands import common
from client.sdk import Action, Certificate, EcertError, PartnerClient, Receipt, load_document_signer
from client.sdk.errors import FieldViolation

PROGRESS_FROM_ROWS = 10  # smaller batches finish before a bar is worth drawing
TABLE_UP_TO_ROWS = 50  # larger batches print the summary and the refused rows only
ENVELOPE_KEYS = {"certificate", "action", "replaces_version", "message_id"}
PARTY_KEYS = ("name", "address", "tax_id")


@dataclass
class Row:
    number: int  # 1-based position in the file (CSV: data row)
    certificate: Certificate
    action: Any = Action.CREATE
    replaces_version: int = 0
    message_id: str = ""


@dataclass
class RowResult:
    row: int
    certificate_number: str
    outcome: str  # ACCEPTED, ACCEPTED_WITH_WARNINGS, REJECTED, or the status code of another refusal
    version: int = 0
    receipt_id: str = ""
    message_id: str = ""
    replayed: bool = False
    reason: str = ""
    message: str = ""
    field_violations: list[FieldViolation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    receipt: Optional[Receipt] = None

    @property
    def refused(self) -> bool:
        return not self.outcome.startswith("ACCEPTED")


def _row(number: int, item: Any) -> Row:
    if not isinstance(item, dict):
        raise common.BadInput(f"item {number}: expected a JSON object")
    try:
        if "certificate" in item and set(item) <= ENVELOPE_KEYS:
            action = common.parse_choice(Action, str(item.get("action", "create")), "action")
            return Row(number, Certificate.from_dict(item["certificate"]), action,
                       int(item.get("replaces_version", 0)), str(item.get("message_id", "")))
        return Row(number, Certificate.from_dict(item))
    except json_format.ParseError as error:
        raise common.BadInput(f"item {number}: {error}") from None


def _csv_item(record: dict[str, str]) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for key, value in record.items():
        if key is None or value in (None, ""):
            continue
        party, _, part = key.partition("_")
        if party in ("exporter", "producer") and part in PARTY_KEYS:
            item.setdefault(party, {})[part] = value
        else:
            item[key] = value
    envelope = {k: item.pop(k) for k in ("action", "replaces_version", "message_id") if k in item}
    return {"certificate": item, **envelope} if envelope else item


def read_rows(path: pathlib.Path) -> list[Row]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return [_row(n, _csv_item(record)) for n, record in enumerate(csv.DictReader(handle), 1)]
    data = common.load_json(path)
    items = data.get("certificates") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise common.BadInput(f"{path}: expected a list of certificates or {{\"certificates\": [...]}}")
    return [_row(n, item) for n, item in enumerate(items, 1)]


def _send(client: PartnerClient, row: Row) -> RowResult:
    number = row.certificate.certificate_number
    try:
        result = client.transmit(row.certificate, action=row.action, replaces_version=row.replaces_version,
                                 message_id=row.message_id)
    except EcertError as error:
        if error.receipt is None and error.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "UNAUTHENTICATED"):
            raise  # the service is not answering at all: stop the batch
        receipt = error.receipt
        return RowResult(row.number, number, receipt.outcome.name if receipt else error.code.name,
                         receipt_id=receipt.receipt_id if receipt else "", message_id=receipt.message_id if receipt else "",
                         reason=error.reason, message=error.message, field_violations=error.field_violations, receipt=receipt)
    receipt = result.receipt
    return RowResult(row.number, number, receipt.outcome.name, receipt.certificate_version, receipt.receipt_id,
                     receipt.message_id, result.replayed, warnings=[i.code for i in receipt.issues], receipt=receipt)


def _print_results(results: list[RowResult]) -> None:
    shown = results if len(results) <= TABLE_UP_TO_ROWS else [r for r in results if r.refused]
    if shown:
        table = Table("row", "certificate", "outcome", "version", "receipt", "reason / warnings", title="receipts")
        for r in shown:
            detail = r.reason or ", ".join(r.warnings)
            if r.field_violations:
                detail += ": " + ", ".join(f"{v.field.removeprefix('envelope.')} {v.reason}" for v in r.field_violations)
            table.add_row(str(r.row), r.certificate_number, r.outcome + (" (replayed)" if r.replayed else ""),
                          str(r.version or ""), r.receipt_id, detail)
        common.out.print(table)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    summary = ", ".join(f"{n} {o.lower()}" for o, n in sorted(counts.items()))
    common.out.print(f"{len(results)} transmitted: {summary}", markup=False)


def register(app: typer.Typer) -> None:
    @app.command()
    @common.handle_errors
    def submit(
        file: pathlib.Path = typer.Argument(..., help="certificates: .json (or '-' for JSON on stdin) or .csv"),
        key_file: pathlib.Path = typer.Option(..., "--key-file", envvar="ECERT_SIGNING_KEY",
                                              help="the partner's Ed25519 document-signing key (PEM)"),
        key_id: Optional[str] = typer.Option(None, "--key-id", envvar="ECERT_SIGNING_KEY_ID",
                                             help="its registered id (default: the KEY_FILE's .key-id file beside it)"),
        sender: str = typer.Option("MX", "--sender", help="the sending partner's id"),
        receipts_dir: Optional[pathlib.Path] = typer.Option(None, "--receipts-dir",
                                                            help="save each receipt as <receipt id>.json (for `ecert receipt verify`)"),
        workers: int = typer.Option(4, "--workers", min=1, max=32, help="transmissions in flight"),
        as_json: bool = common.JSON,
        target: Optional[str] = common.TARGET,
        insecure: bool = common.INSECURE,
        tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
        timeout: Optional[float] = common.TIMEOUT,
    ) -> None:
        """Sign and transmit certificates; print each receipt and a summary."""
        rows = read_rows(file)
        if not rows:
            raise common.BadInput(f"{file}: no certificates")
        signer = load_document_signer(key_file, key_id or "")  # the id from --key-id or the .key-id file

        with PartnerClient(signer, sender, common.settings(target, insecure, tls_dir, timeout)) as client:
            results = _run(client, rows, workers, show_progress=len(rows) >= PROGRESS_FROM_ROWS)
        if receipts_dir is not None:
            receipts_dir.mkdir(parents=True, exist_ok=True)
            for r in results:
                if r.receipt is not None:
                    (receipts_dir / f"{r.receipt_id}.json").write_text(r.receipt.to_json() + "\n", encoding="utf-8")
        if as_json:
            # Each receipt as protobuf JSON, exactly as customs signed it (what --receipts-dir writes), so that
            # `ecert receipt verify` checks this output, a row of it, or its receipt.
            common.print_json([{k: v for k, v in vars(r).items() if k != "receipt"}
                               | {"receipt": json_format.MessageToDict(r.receipt.to_proto()) if r.receipt else None}
                               for r in results])
        else:
            _print_results(results)
        if any(r.refused for r in results):
            raise typer.Exit(common.EXIT_REFUSED)


def _run(client: PartnerClient, rows: list[Row], workers: int, *, show_progress: bool) -> list[RowResult]:
    progress = Progress(TextColumn("transmitting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=common.err, disable=not show_progress)
    with progress, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="submit") as pool:
        task = progress.add_task("transmit", total=len(rows))
        pending = [pool.submit(_send, client, row) for row in rows]
        results = []
        for future in pending:  # in file order; the pool keeps `workers` transmissions in flight
            results.append(future.result())
            progress.advance(task)
    return results
