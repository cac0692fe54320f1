"""Holding a database lock from outside the service, to make its transactions wait for real."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def certificate_locked(database_url: str, country: str, number: str) -> Iterator[None]:
    """Until the block ends, writes to this certificate wait: on PostgreSQL its head row is locked
    (SELECT ... FOR UPDATE, as a REPLACE does); SQLite's single writer lock is taken (BEGIN IMMEDIATE)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        connection = sqlite3.connect(url.database, isolation_level=None, timeout=10)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    engine = create_engine(url, poolclass=None)
    try:
        with engine.connect() as connection, connection.begin():
            row = connection.execute(
                text("SELECT 1 FROM certificates WHERE issuing_country = :c AND certificate_number = :n FOR UPDATE"),
                {"c": country, "n": number},
            ).one_or_none()
            assert row is not None, "nothing to lock"
            yield
    finally:
        engine.dispose()
