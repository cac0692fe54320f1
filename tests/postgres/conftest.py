"""Fixtures for tests that run several real service processes over one PostgreSQL database."""
from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

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
