"""`ecert certificate`: read certificates, their versions, the activity report and their usage."""
from __future__ import annotations

import itertools
import pathlib
from typing import Optional

import typer
from rich.table import Table

from client.commands import common
from client.sdk import CertificateStatus, Condition, OperatorClient, StoredCertificate

app = typer.Typer(help="Certificates on file: get, list, activity report, usage by entries.", no_args_is_help=True)


def _detail_table(stored: StoredCertificate) -> Table:
    c = stored.certificate
    table = Table(show_header=False, title=f"{c.issuing_country} {c.certificate_number} v{stored.version}")
    rows = [
        ("status", common.fmt(stored.status) + ("" if stored.current else " (superseded)")),
        ("TPL", c.tpl_number), ("HTSUS", c.htsus_number), ("goods", c.goods_description),
        ("quantity", f"{c.quantity} {c.unit}"), ("remaining", f"{common.fmt(stored.remaining_quantity)} {c.unit}"),
        ("importer of record", c.importer_of_record), ("exporter", f"{c.exporter.name} ({c.exporter.tax_id})"),
        ("producer", f"{c.producer.name} ({c.producer.tax_id})"), ("quota year", str(c.quota_year)),
        ("valid", f"{c.issue_date} to {c.last_valid_date}"), ("invoice", c.invoice_number),
        ("received", common.fmt(stored.received_at)), ("sender", stored.sender),
        ("message id", stored.message_id), ("receipt id", stored.receipt_id), ("digest", stored.digest_sha256.hex()),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


@app.command()
@common.handle_errors
def get(
    issuing_country: str = typer.Argument(..., help="partner country, e.g. MX"),
    certificate_number: str = typer.Argument(...),
    version: int = typer.Option(0, "--version", min=0, help="a given version (default the latest)"),
    as_json: bool = common.JSON,
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """One certificate as stored: its elements, status, remaining quantity and provenance."""
    with OperatorClient(common.settings(target, insecure, tls_dir, timeout)) as client:
        stored = client.get_certificate(issuing_country, certificate_number, version)
    common.print_json(stored) if as_json else common.out.print(_detail_table(stored))


@app.command("list")
@common.handle_errors
def list_(
    issuing_country: str = typer.Argument(..., help="partner country, e.g. MX"),
    status: Optional[str] = typer.Option(None, "--status", help="active or canceled"),
    year: int = typer.Option(0, "--year", help="quota year"),
    tpl: str = typer.Option("", "--tpl", help="TPL's Chapter 98 number, e.g. 9823.53.01"),
    limit: int = typer.Option(0, "--limit", min=0, help="at most this many (0: all)"),
    as_json: bool = common.JSON,
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """Latest versions of a partner's certificates, in number order (every page)."""
    wanted = common.parse_choice(CertificateStatus, status, "status") if status else None
    with OperatorClient(common.settings(target, insecure, tls_dir, timeout)) as client:
        found = client.list_certificates(issuing_country, status=wanted, quota_year=year, tpl_number=tpl)
        items = list(itertools.islice(found, limit) if limit else found)
    if as_json:
        return common.print_json(items)
    table = Table("certificate", "v", "status", "TPL", "quantity", "remaining", "unit", "importer", "year")
    for s in items:
        c = s.certificate
        table.add_row(c.certificate_number, str(s.version), common.fmt(s.status), c.tpl_number, c.quantity,
                      common.fmt(s.remaining_quantity), c.unit, c.importer_of_record, str(c.quota_year))
    common.out.print(table)
    common.out.print(f"{len(items)} certificate(s)")


@app.command()
@common.handle_errors
def report(
    issuing_country: str = typer.Argument(..., help="partner country, e.g. MX"),
    condition: str = typer.Option(..., "--condition", help="matched (10), unmatched (11) or canceled (12)"),
    year: int = typer.Option(0, "--year", help="quota year (0: every year)"),
    as_json: bool = common.JSON,
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """The partner's activity report: certificates by eCERT condition."""
    wanted = common.parse_choice(Condition, condition, "condition")
    with OperatorClient(common.settings(target, insecure, tls_dir, timeout)) as client:
        entries = list(client.activity_report(issuing_country, wanted, quota_year=year))
    if as_json:
        return common.print_json(entries)
    table = Table("certificate", "condition", "v", "TPL", "year", "quantity", "remaining", "unit", "importer",
                  title=f"{issuing_country} activity: {wanted.name.lower()} ({wanted.to_proto()})")
    for e in entries:
        table.add_row(e.certificate_number, str(e.condition.to_proto()), str(e.version), e.tpl_number, str(e.quota_year),
                      common.fmt(e.quantity), common.fmt(e.remaining_quantity), e.unit, e.importer_of_record)
    common.out.print(table)
    common.out.print(f"{len(entries)} certificate(s)")


@app.command()
@common.handle_errors
def usage(
    issuing_country: str = typer.Argument(..., help="partner country, e.g. MX"),
    certificate_number: str = typer.Argument(...),
    as_json: bool = common.JSON,
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """A certificate's use by entries (eCERT 2.0 decrement): quantity, used, remaining, each entry line."""
    with OperatorClient(common.settings(target, insecure, tls_dir, timeout)) as client:
        found = client.certificate_usage(issuing_country, certificate_number)
    if as_json:
        return common.print_json(found)
    common.out.print(
        f"{found.issuing_country} {found.certificate_number} (importer {found.importer_of_record}): "
        f"{common.fmt(found.quantity)} {found.unit}, used {common.fmt(found.used_quantity)}, "
        f"remaining {common.fmt(found.remaining_quantity)}", markup=False,
    )
    table = Table("entry", "line", "importer", "granted", "decided", "reversed")
    for u in found.uses:
        table.add_row(u.entry_number, str(u.line_number), u.importer_of_record, common.fmt(u.granted_quantity),
                      common.fmt(u.decided_at), "yes" if u.reversed else "")
    common.out.print(table)
