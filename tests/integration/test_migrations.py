"""Alembic migrations on SQLite and on PostgreSQL: from empty to head, and from every revision with
data in it to head, with the data intact; and the migrated schema is what the models declare.

Generic over revisions: each new revision in server/migrations/versions/ is covered without editing
this file. Sample rows are made up from the reflected schema; a column whose values a CHECK
constraint restricts needs an entry in SAMPLE_VALUES.
"""
from __future__ import annotations

import datetime as dt
import pathlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from server.adapters.database import MIGRATIONS, Database
from server.adapters.orm import Base

SAMPLE_VALUES: dict[str, Any] = {  # "table.column" or "column"
    "status": "ACTIVE",
    "action": "CREATE",
    # charged + escrowed <= limit (migration 0011): nothing carved out in the sample level.
    "quota_levels.escrowed": 0,
}


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def upgrade(url: str, revision: str) -> None:
    database = Database(url)
    config = alembic_config()
    try:
        with database.write_engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        database.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[str]:
    """An empty database of each engine (named database_url so the run counts it per engine)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create()
    yield server.url_of(name)
    server.drop(name)


def sample(table: sa.Table, column: sa.Column[Any], n: int, chosen: dict[tuple[str, str], Any]) -> Any:
    for key in (f"{table.name}.{column.name}", column.name):
        if key in SAMPLE_VALUES:
            return SAMPLE_VALUES[key]
    for fk in column.foreign_keys:
        return chosen[(fk.column.table.name, fk.column.name)]
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return True
    if isinstance(kind, sa.Integer):
        return 1000 + n
    if isinstance(kind, sa.Numeric):
        return Decimal("12.5")
    if isinstance(kind, sa.DateTime):
        return dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.timezone.utc)
    if isinstance(kind, sa.Date):
        return dt.date(2026, 3, 2)
    if isinstance(kind, sa.LargeBinary):
        return bytes(range(8))
    if isinstance(kind, sa.String):
        text = f"v{n}-{column.name}"
        return text[: kind.length] if kind.length else text
    raise NotImplementedError(f"no sample for {table.name}.{column.name} ({kind}); add one to SAMPLE_VALUES")


def insert_samples(url: str) -> dict[str, dict[str, Any]]:
    """One row in every table (parents first), read back as stored."""
    engine = sa.create_engine(url)
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        chosen: dict[tuple[str, str], Any] = {}
        stored = {}
        with engine.begin() as connection:
            for n, table in enumerate(metadata.sorted_tables):
                if table.name == "alembic_version":
                    continue
                if connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one():
                    continue  # seeded by its migration (e.g. the audit chain's tip): not ours to add to
                row = {}
                for column in table.columns:
                    row[column.name] = chosen[(table.name, column.name)] = sample(table, column, n, chosen)
                connection.execute(table.insert().values(row))
                stored[table.name] = dict(connection.execute(sa.select(table)).one()._mapping)
        return stored
    finally:
        engine.dispose()


def read_back(url: str, tables: list[str]) -> dict[str, list[dict[str, Any]]]:
    engine = sa.create_engine(url)
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine, only=tables)
        with engine.connect() as connection:
            return {t: [dict(r._mapping) for r in connection.execute(sa.select(metadata.tables[t]))] for t in tables}
    finally:
        engine.dispose()


def test_there_is_one_line_of_revisions():
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1, "several heads: merge them (alembic merge)"
    assert revisions()


def test_upgrade_from_empty_gives_the_schema_the_models_declare(database_url: str):
    upgrade(database_url, "head")
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_upgrading_twice_is_harmless(database_url: str):
    upgrade(database_url, "head")
    upgrade(database_url, "head")


@pytest.mark.parametrize("revision", revisions())
def test_data_written_at_a_revision_survive_the_upgrade_to_head(database_url: str, revision: str):
    upgrade(database_url, revision)
    before = insert_samples(database_url)
    upgrade(database_url, "head")
    after = read_back(database_url, list(before))
    for table, row in before.items():
        assert len(after[table]) == 1, f"{table}: rows lost or multiplied by the upgrade from {revision}"
        kept = {k: v for k, v in after[table][0].items() if k in row}
        assert kept == {k: v for k, v in row.items() if k in kept}, f"{table} changed by the upgrade from {revision}"
