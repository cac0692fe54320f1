"""Shared fixtures: a real gRPC server on a free loopback port over a real SQLite file."""
from __future__ import annotations

import datetime as dt
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from ecert.v1 import transmission_pb2_grpc
from server.adapters.keystore import load_signer, trust_entry, write_trust_store
from server.app import RunningServer, create_server
from server.config import Settings
from server.domain.signing import Signer
from server.service.clock import FixedClock
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


@pytest.fixture
def settings(tmp_path: pathlib.Path, partner: Partner) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", database_url="", host="127.0.0.1", port=0, trust_store="", receipt_key="")
    year = dt.timedelta(days=365)
    write_trust_store(
        settings.resolved_trust_store(),
        [
            trust_entry(partner.signer, "MX", NOW - year, NOW + year),
            trust_entry(partner.expired_signer, "MX", NOW - 7 * year, NOW - year),
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
