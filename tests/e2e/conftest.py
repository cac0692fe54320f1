"""Three parties as separate processes on loopback ports, with real certificates and signatures."""
from __future__ import annotations

import json
import pathlib
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from client.pki import init_pki
from gateway_sim.processes import Party, gateway_command, start_relay, start_service


@dataclass
class World:
    root: pathlib.Path
    pki: pathlib.Path
    service: Party
    relays: list[Party] = field(default_factory=list)

    @property
    def relay(self) -> Party:
        return self.relays[-1]

    def start_relay(self, *faults: str, port: int = 0) -> Party:
        relay = start_relay(self.pki, self.root / "relay", self.service.address, port=port, faults=list(faults))
        self.relays.append(relay)
        return relay

    def gateway_args(self, *scenario: str, **options: object) -> list[str]:
        return gateway_command(self.pki, self.root / "gateway" / "register.db", self.relay.address, *scenario, **options)  # type: ignore[arg-type]

    def gateway(self, *scenario: str, **options: object) -> dict:
        done = subprocess.run(self.gateway_args(*scenario, **options), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def service_rows(self, sql: str) -> list[tuple]:
        with sqlite3.connect(f"file:{self.root / 'service' / 'ecert.db'}?mode=ro", uri=True) as db:
            return db.execute(sql).fetchall()

    def register_rows(self, sql: str) -> list[tuple]:
        with sqlite3.connect(f"file:{self.root / 'gateway' / 'register.db'}?mode=ro", uri=True) as db:
            return db.execute(sql).fetchall()

    def relay_rows(self, sql: str) -> list[tuple]:
        with sqlite3.connect(f"file:{self.root / 'relay' / 'relay.db'}?mode=ro", uri=True) as db:
            return db.execute(sql).fetchall()


@pytest.fixture
def world(tmp_path: pathlib.Path) -> Iterator[World]:
    init_pki(tmp_path / "pki")
    world = World(tmp_path, tmp_path / "pki", start_service(tmp_path / "pki", tmp_path / "service"))
    try:
        yield world
    finally:
        for relay in world.relays:
            relay.stop()
        world.service.stop()
