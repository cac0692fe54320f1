"""Fixtures for tests that run several real service processes over one PostgreSQL database."""
from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

from server.adapters.database import Database
from tests.databases import PostgresServer
from tests.factories import new_signer
from tests.processes import Deployment


@pytest.fixture
def empty_postgres(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database: the replicas' own start-up migrates it."""
    name = postgres_server.create()
    yield postgres_server.url_of(name)
    postgres_server.drop(name)


@pytest.fixture
def deployment(tmp_path: pathlib.Path, empty_postgres: str) -> Deployment:
    return Deployment(tmp_path, empty_postgres, new_signer("mx-se-2026-1"))


@pytest.fixture
def db(deployment: Deployment) -> Iterator[Engine]:
    """A direct connection, for checking what is stored."""
    engine = create_engine(deployment.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    """The service's Database with a pool of one connection: whatever a unit of work leaves on its
    connection (prepared statements, held writes, a pipeline), the next unit meets (test_held_writes,
    test_read_together; test_transactions has a database of its own)."""
    db = Database(postgres_url, pool_size=1)
    yield db
    db.dispose()
