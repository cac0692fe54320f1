"""`ecert db`: database administration."""
from __future__ import annotations

import typer

from client.commands.database import database_errors, resolved_url

app = typer.Typer(help="Database schema administration.", no_args_is_help=True)


@app.command()
@database_errors
def upgrade(database_url: str = typer.Option("", help="SQLAlchemy URL (default ECERT_DATABASE_URL)")) -> None:
    """Apply every pending schema migration (an SQLite file is created if missing). Alembic reports each
    one in the service's log format (ECERT_LOG_FORMAT, ECERT_LOG_LEVEL)."""
    from server.adapters.database import Database
    from server.config import Settings
    from server.observability import logs

    settings = Settings()
    settings.validate()
    logs.configure(settings.logging_level(), json_format=settings.log_format != "text")
    database = Database(resolved_url(database_url))
    try:
        database.upgrade()
    finally:
        database.dispose()
    typer.echo(f"schema up to date: {database.dialect}")
