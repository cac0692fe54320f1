"""`ecert reference`: load and list versions of the reference tables (TPLs, conversion factors)."""
from __future__ import annotations

import json
import pathlib

import typer

from client.commands.database import database_errors, resolved_url

app = typer.Typer(help="Reference data: TPL levels and partners; SME conversion factors.", no_args_is_help=True)


def _store(database_url: str):  # type: ignore[no-untyped-def]  # returns a Database and its ReferenceStore, imported lazily inside
    from server.adapters.database import Database
    from server.service.clock import SystemClock
    from server.service.reference import ReferenceStore

    database = Database(resolved_url(database_url))
    database.upgrade()
    return database, ReferenceStore(database, SystemClock())


@app.command()
@database_errors
def load(
    file: pathlib.Path = typer.Argument(..., help="a reference document (JSON with kind, version, source)"),
    database_url: str = typer.Option("", help="SQLAlchemy URL (default ECERT_DATABASE_URL)"),
) -> None:
    """Load a new version of a table. Claims decided afterwards record the version that converted them."""
    from server.domain.errors import DomainError

    database, store = _store(database_url)
    try:
        store.ensure_defaults()
        result = store.load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except DomainError as exc:
        typer.echo(f"error: {exc.reason}: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        database.dispose()
    verb = "loaded" if result.loaded else "already loaded (identical)"
    typer.echo(f"{result.kind} version {result.version} {verb}" + (f"; {result.levels} levels set" if result.levels else ""))


@app.command("list")
@database_errors
def list_versions(
    database_url: str = typer.Option("", help="SQLAlchemy URL (default ECERT_DATABASE_URL)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every loaded version, oldest first; the newest of each kind is in force."""
    database, store = _store(database_url)
    try:
        store.ensure_defaults()
        rows = store.history()
    finally:
        database.dispose()
    if as_json:
        typer.echo(json.dumps([{"id": i, "kind": k, "version": v, "digest": d, "loaded_at": at.isoformat()} for i, k, v, d, at in rows]))
        return
    for i, kind, version, digest, at in rows:
        typer.echo(f"{i:>4}  {kind:<10} {version:<40} {digest[:12]}  {at.isoformat()}")
