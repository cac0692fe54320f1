"""`ecert db`: database administration."""
from __future__ import annotations

import typer

app = typer.Typer(help="Database schema administration.", no_args_is_help=True)


@app.command()
def upgrade(database_url: str = typer.Option("", help="SQLAlchemy URL (default ECERT_DATABASE_URL)")) -> None:
    """Apply every pending schema migration."""
    from server.adapters.database import Database
    from server.config import Settings

    settings = Settings()
    url = database_url or settings.resolved_database_url()
    Database(url).upgrade()
    typer.echo(f"schema up to date: {Database(url).dialect}")
