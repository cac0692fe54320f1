"""`ecert audit verify`: recompute the transparency log from its entries and check it against its signed
checkpoints (and one held elsewhere);
`ecert audit reconcile`: every stored balance against the records that justify it."""
from __future__ import annotations

import json
import pathlib
from typing import Optional

import typer

from client.commands.common import BadInput
from client.commands.database import database_errors, open_existing

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


def log_verifier(log_key: str, origin: str = ""):  # type: ignore[no-untyped-def]  # returns a NoteVerifier or None, imported lazily inside
    """The log's note verifier: from `log_key` (the verifier key text, or a file holding it, as
    `ecert log checkpoint` prints it), else from the service's own log-signing key and origin; None
    when neither is there."""
    import pathlib

    from contract.note import NoteError, NoteVerifier, raw_public_key
    from server.config import Settings

    if log_key:
        path = pathlib.Path(log_key)
        text = path.read_text(encoding="utf-8").strip() if path.is_file() else log_key.strip()
        try:
            return NoteVerifier.parse(text)
        except NoteError as exc:
            raise BadInput(f"--log-key: not a note verifier key ({exc})") from None
    settings = Settings.load()
    key_file = settings.resolved_log_key()
    if not key_file.is_file():
        return None  # checkpoints, if any, cannot be checked: the verification says so
    from server.adapters.keystore import load_or_create_log_key

    return NoteVerifier(origin or settings.log_origin, raw_public_key(load_or_create_log_key(key_file).public_key()))


@app.command()
@database_errors
def verify(
    database_url: str = typer.Option("", help="SQLAlchemy URL (default ECERT_DATABASE_URL or the data dir's SQLite file)"),
    log_key: str = typer.Option("", "--log-key", help="the log's verifier key (name+hash+key) or a file holding it (default: from the service's log-signing key)"),
    checkpoint: Optional[pathlib.Path] = typer.Option(None, "--checkpoint", help="a checkpoint note kept outside the database (e.g. one a witness cosigned): the log must be consistent with it"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Recompute the transparency log's tree from its stored entries and check it against every stored
    checkpoint (signed with the log key) and, with --checkpoint, against one held elsewhere; check that
    every claim and transmission is logged. Exit 0 when all hold; 1 and what failed otherwise.
    No database where one is expected: exit 2, and nothing is created; one that cannot be reached: 3."""
    from server.service.audit import verify_audit_log

    outside = None
    if checkpoint is not None:
        try:
            outside = checkpoint.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"--checkpoint: {exc}") from None
    database = open_existing(database_url)
    try:
        result = verify_audit_log(database, log_verifier(log_key), outside)
    finally:
        database.dispose()
    if as_json:
        typer.echo(json.dumps({"records": result.records, "tree_size": result.tree_size, "intact": result.intact,
                               "first_broken": result.first_broken, "pending": result.pending, "problems": result.problems}))
    elif result.intact:
        typer.echo(f"audit log intact: {result.records} records verified, checkpoint of size {result.tree_size} signed by the log key"
                   + (f", consistent with the checkpoint in {checkpoint}" if checkpoint else ""))
    else:
        for problem in result.problems:
            typer.echo(f"audit log BROKEN: {problem}", err=True)
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
