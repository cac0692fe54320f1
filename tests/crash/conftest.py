"""Crash tests run a real service process on SQLite (the single-node default) and on PostgreSQL."""
from __future__ import annotations

import pathlib

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared' / 'ecert.db'}"
    return str(request.getfixturevalue("postgres_url"))
