"""Shared fixtures: a real gRPC server on a free loopback port over a real database.

Every test that uses the server runs twice: on a fresh SQLite file and on a fresh PostgreSQL
database (tests/databases.py says where that comes from). Tests without a server run once.
"""
from __future__ import annotations

import datetime as dt
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from contract.keys import load_signer, trust_entry, write_trust_store
from contract.signing import Signer
from ecert.v1 import transmission_pb2_grpc
from server.app import RunningServer, create_server
from server.config import Settings
from server.service.clock import FixedClock
from tests import databases
from tests.factories import NOW, new_signer


@dataclass
class Partner:
    signer: Signer
    expired_signer: Signer
    other_partner_signer: Signer


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def partner() -> Partner:
    return Partner(new_signer("mx-se-2026-1"), new_signer("mx-se-2019-1"), new_signer("gt-mineco-1"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[databases.PostgresServer]:
    server = databases.connect_or_skip()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_template(postgres_server: databases.PostgresServer) -> str:
    """A database migrated once per session; each test's database is a copy of it."""
    from server.adapters.database import Database

    name = postgres_server.create()
    database = Database(postgres_server.url_of(name))
    database.upgrade()
    database.dispose()
    return name


@pytest.fixture
def postgres_url(postgres_server: databases.PostgresServer, postgres_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test, dropped after it."""
    name = postgres_server.create(template=postgres_template)
    yield postgres_server.url_of(name)
    postgres_server.drop(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """The engine under test: "" is the default SQLite file in the data dir."""
    return "" if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def settings(tmp_path: pathlib.Path, partner: Partner, database_url: str) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, host="127.0.0.1", port=0, trust_store="", receipt_key="")
    year = dt.timedelta(days=365)
    write_trust_store(
        settings.resolved_trust_store(),
        [
            trust_entry(partner.signer, "MX", NOW - 3 * year, NOW + year),
            trust_entry(partner.expired_signer, "MX", NOW - 10 * year, NOW - 4 * year),
            trust_entry(partner.other_partner_signer, "GT", NOW - year, NOW + year),
        ],
    )
    return settings


@pytest.fixture
def server(settings: Settings, clock: FixedClock) -> Iterator[RunningServer]:
    running = create_server(settings, address="127.0.0.1:0", clock=clock)
    yield running
    running.stop(0)


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def transmission(channel: grpc.Channel) -> transmission_pb2_grpc.TransmissionServiceStub:
    return transmission_pb2_grpc.TransmissionServiceStub(channel)


@pytest.fixture
def receipt_public_key(server: RunningServer, settings: Settings):  # type: ignore[no-untyped-def]
    return load_signer(settings.resolved_receipt_key(), settings.receipt_key_id).public_key


@pytest.fixture
def match(channel: grpc.Channel):  # type: ignore[no-untyped-def]
    from ecert.v1 import match_pb2_grpc

    return match_pb2_grpc.MatchServiceStub(channel)


@pytest.fixture
def quota(channel: grpc.Channel):  # type: ignore[no-untyped-def]
    from ecert.v1 import quota_pb2_grpc

    return quota_pb2_grpc.QuotaServiceStub(channel)


# -- a count of the tests that ran on each engine, at the end of the run ----------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    databases.record_collection(items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    databases.record_report(report)


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    terminalreporter.write_line(databases.summary_line())
