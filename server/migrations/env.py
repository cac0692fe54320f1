"""Alembic environment: runs on the connection the service hands over (see Database.upgrade)."""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from server.adapters.orm import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # plain `alembic` command line use: ECERT_DATABASE_URL or alembic.ini
        url = config.get_main_option("sqlalchemy.url")
        with create_engine(url).begin() as connection:
            _migrate(connection)
    else:
        _migrate(connection)


def _migrate(connection) -> None:  # type: ignore[no-untyped-def]  # alembic hands over an untyped connection
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
