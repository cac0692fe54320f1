"""What the commands that open the database themselves share (`serve`, `db`, `audit`, `reference`).

A failure is one line on stderr and an exit status (client/commands/common.py), never a traceback:
no database file where one is expected (2: nothing is created), a database without the schema (2),
a URL that cannot be used (2), a server that cannot be reached (3).
"""
from __future__ import annotations

import functools
import pathlib
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from client.commands import common

WHERE = ("run it where `ecert serve` keeps its data (./ecert-data), or name the database with --database-url, "
         "ECERT_DATABASE_URL or ECERT_DATA_DIR")


def resolved_url(database_url: str) -> str:
    from server.config import Settings

    return database_url or Settings().resolved_database_url()


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as it was given
        return url


def open_existing(database_url: str):  # type: ignore[no-untyped-def]  # returns a Database, imported lazily inside
    """The database to read, which must already exist: an SQLite file that is not there is reported,
    not created empty (a read in the wrong folder would otherwise leave an empty database behind)."""
    from sqlalchemy.engine import make_url

    from server.adapters.database import Database

    url = resolved_url(database_url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        if not pathlib.Path(parsed.database).is_file():
            raise common.BadInput(f"no database at {parsed.database}: {WHERE}")
    return Database(url)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


F = TypeVar("F", bound=Callable[..., Any])


def database_errors(command: F) -> F:
    """Database failures become one line and an exit status."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy import exc

        from server.config import ConfigError

        try:
            return command(*args, **kwargs)
        except (common.BadInput, ConfigError) as error:
            common.err.print(f"error: {error}", markup=False)
            raise typer.Exit(common.EXIT_BAD_INPUT) from None
        except (exc.ArgumentError, exc.NoSuchModuleError) as error:
            common.err.print(f"error: unusable database URL: {_one_line(error)}", markup=False)
            raise typer.Exit(common.EXIT_BAD_INPUT) from None
        except exc.DBAPIError as error:
            text = _one_line(error.orig if error.orig is not None else error)
            if "no such table" in text or ("relation" in text and "does not exist" in text):
                common.err.print(f"error: the database has no eCERT schema ({text}); `ecert db upgrade` creates it, "
                                 f"or {WHERE}", markup=False)
                raise typer.Exit(common.EXIT_BAD_INPUT) from None
            if isinstance(error, (exc.OperationalError, exc.InterfaceError)):
                common.err.print(f"error: cannot use the database: {text}", markup=False)
                raise typer.Exit(common.EXIT_UNREACHABLE) from None
            raise

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the command's signature for typer
