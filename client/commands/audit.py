"""`ecert audit verify`: walk the hash-chained decision log and report the first broken link;
`ecert audit reconcile`: every stored balance against the records that justify it."""
from __future__ import annotations

import json

import typer

from client.commands.database import database_errors, open_existing

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


@app.command()
@database_errors
def verify(
    database_url: str = typer.Option("", help="SQLAlchemy URL (default ECERT_DATABASE_URL or the data dir's SQLite file)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Exit 0 when every record links to the one before it; 1 and the first broken record otherwise.
    No database where one is expected: exit 2, and nothing is created; one that cannot be reached: 3."""
    from server.service.audit import verify_audit_log

    database = open_existing(database_url)
    try:
        result = verify_audit_log(database)
    finally:
        database.dispose()
    if as_json:
        typer.echo(json.dumps({"records": result.records, "intact": result.intact, "first_broken": result.first_broken}))
    elif result.intact:
        typer.echo(f"audit log intact: {result.records} records verified")
    else:
        typer.echo(f"audit log BROKEN at record {result.first_broken} ({result.records} records read)", err=True)
    if not result.intact:
        raise typer.Exit(1)


@app.command()
@database_errors
def reconcile(
    database_url: str = typer.Option("", help="SQLAlchemy URL (default ECERT_DATABASE_URL or the data dir's SQLite file)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Recompute every level's charged amount from the quota ledger and from live claims, and every
    certificate's use from live claims. Exit 0 when all agree and lie within their bounds; 1 and one
    line per drift otherwise."""
    from client.commands.reconcile import run_reconcile

    run_reconcile(database_url, as_json)
