"""`ecert audit reconcile`: the stored balances against the records that justify them."""
from __future__ import annotations

import json

import typer


def run_reconcile(database_url: str, as_json: bool) -> None:
    from client.commands.database import open_existing
    from server.service.reconcile import reconcile_ledger

    database = open_existing(database_url)  # nothing is created where no database is
    try:
        result = reconcile_ledger(database)
    finally:
        database.dispose()
    if as_json:
        typer.echo(json.dumps({
            "levels": result.levels,
            "certificates": result.certificates,
            "balanced": result.balanced,
            "drifts": [{"kind": d.kind, "subject": d.subject, "stored": d.stored, "expected": d.expected} for d in result.drifts],
        }))
    elif result.balanced:
        typer.echo(f"ledger balanced: {result.levels} levels and {result.certificates} certificates agree with the quota ledger and live claims")
    else:
        for drift in result.drifts:
            typer.echo(str(drift), err=True)
        typer.echo(f"ledger DRIFT: {len(result.drifts)} finding(s) over {result.levels} levels and {result.certificates} certificates", err=True)
    if not result.balanced:
        raise typer.Exit(1)
