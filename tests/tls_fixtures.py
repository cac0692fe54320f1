"""A real development PKI for security and end-to-end tests, plus the odd certificates attacks need."""
from __future__ import annotations

import datetime as dt
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from client.pki import PkiLayout, init_pki, issue, load_authority, new_authority, write_party
from client.tls import channel_credentials, server_credentials
from contract.identity import Identity, Role
from server.app import RunningServer, create_server
from server.config import Settings


@dataclass
class DevPki:
    layout: PkiLayout
    root: pathlib.Path

    def dir(self, party: str) -> pathlib.Path:
        return self.root / party


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    root = tmp_path_factory.mktemp("pki")
    layout = init_pki(root)
    authority = load_authority(root / "ca")
    now = dt.datetime.now(dt.timezone.utc)
    # Extra parties that only attacks and edge cases use.
    write_party(root / "partner-gt", authority, issue(authority, Identity("Guatemala gateway", Role.PARTNER, frozenset({"GT"}))))
    write_party(root / "importer-other", authority, issue(authority, Identity("another importer", Role.IMPORTER, importers=frozenset({"98-765432100"}))))
    write_party(root / "no-role", authority, issue(authority, Identity("a certificate without a role", None)))
    write_party(
        root / "expired-mx",
        authority,
        issue(authority, Identity("Mexico gateway, expired", Role.PARTNER, frozenset({"MX"})),
              not_before=now - dt.timedelta(days=400), not_after=now - dt.timedelta(days=35)),
    )
    stranger = new_authority("some other CA")
    foreign = write_party(root / "foreign-ca-mx", stranger, issue(stranger, Identity("Mexico gateway by another CA", Role.PARTNER, frozenset({"MX"}))))
    # It trusts customs' real CA (so it can verify the server): only its own certificate is foreign.
    (foreign / "ca.pem").write_bytes((root / "ca" / "ca.pem").read_bytes())
    return DevPki(layout, root)


def service_settings(pki: DevPki, data_dir: pathlib.Path) -> Settings:
    return Settings(
        data_dir=data_dir, database_url="", host="127.0.0.1", port=0,
        trust_store=str(pki.layout.trust_store), receipt_key=str(pki.layout.receipt_key), tls_dir=str(pki.dir("service")),
    )


@pytest.fixture
def secure_server(pki: DevPki, tmp_path: pathlib.Path) -> Iterator[RunningServer]:
    settings = service_settings(pki, tmp_path / "service")
    running = create_server(settings, address="127.0.0.1:0", credentials=server_credentials(pki.dir("service")))
    yield running
    running.stop(0)


def channel_as(pki: DevPki, party: str, port: int) -> grpc.Channel:
    return grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(pki.dir(party)))
