"""Replacing the partners' trust store or the service's TLS material takes effect without a restart
(server/adapters/reload.py): a real server on a real port, real files replaced on disk."""
from __future__ import annotations

import datetime as dt
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.pki import init_pki
from client.tls import channel_credentials
from contract.keys import trust_entry, write_trust_store
from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import transmission_pb2_grpc
from server.adapters.reload import ReloadingTls
from server.app import RunningServer, create_server
from server.config import Settings
from server.service.clock import FixedClock
from tests.factories import NOW, certificate, envelope, new_signer
from tests.grpc_errors import rich_error

YEAR = dt.timedelta(days=365)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def replace_file(path: pathlib.Path, content: str | bytes) -> None:
    """As an operator should: write beside it, then rename over it."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(content.encode() if isinstance(content, str) else content)
    os.replace(temporary, path)


# -- the partners' trust store ------------------------------------------------------------------------


@pytest.fixture
def trust_store_server(tmp_path: pathlib.Path) -> Iterator[tuple[RunningServer, pathlib.Path]]:
    store = tmp_path / "partner-keys.json"
    write_trust_store(store, [trust_entry(new_signer("mx-old-1"), "MX", NOW - YEAR, NOW + YEAR)])
    settings = Settings(data_dir=tmp_path / "data", database_url="", host="127.0.0.1", port=0,
                        trust_store=str(store), receipt_key="")
    running = create_server(settings, address="127.0.0.1:0", clock=FixedClock(NOW))
    yield running, store
    running.stop(0)


def test_a_key_added_to_the_trust_store_is_trusted_and_a_key_removed_is_not(trust_store_server):
    running, store = trust_store_server
    signer = new_signer("mx-new-1")
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = transmission_pb2_grpc.TransmissionServiceStub(channel)
        counter = iter(range(1, 1000))

        def outcome() -> str:  # a fresh certificate and message each time
            n = next(counter)
            request = tpb.SubmitCertificateRequest(envelope=envelope(signer, certificate(f"MX26-{n:08d}"), message_id=f"m-{n}"))
            try:
                stub.SubmitCertificate(request, timeout=10)
                return "ACCEPTED"
            except grpc.RpcError as error:
                return rich_error(error).reason

        assert outcome() == "SIGNING_KEY_UNKNOWN"
        replace_file(store, store.read_text())  # the same keys again: nothing changes
        write_trust_store(store, [trust_entry(new_signer("mx-old-1"), "MX", NOW - YEAR, NOW + YEAR),
                                  trust_entry(signer, "MX", NOW - YEAR, NOW + YEAR)])
        assert eventually(lambda: outcome() == "ACCEPTED")

        replace_file(store, "{not json")  # a broken file: the keys in force stay
        time.sleep(2.5)
        assert outcome() == "ACCEPTED"

        write_trust_store(store, [trust_entry(new_signer("mx-old-1"), "MX", NOW - YEAR, NOW + YEAR)])  # revoked
        assert eventually(lambda: outcome() == "SIGNING_KEY_UNKNOWN")


# -- the service's TLS material -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path]:
    return init_pki(tmp_path_factory.mktemp("pki-a")).root, init_pki(tmp_path_factory.mktemp("pki-b")).root


def answers(port: int, client_dir: pathlib.Path) -> bool:
    """A new connection (its own subchannel pool, so a new handshake) as the party in client_dir."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(client_dir), options=options) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
            return True
        except grpc.RpcError as error:
            assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), error
            return False


def test_replaced_tls_material_is_used_for_new_connections(tmp_path, two_pkis):
    pki_a, pki_b = two_pkis
    tls_dir = tmp_path / "tls"
    shutil.copytree(pki_a / "service", tls_dir)
    tls = ReloadingTls(tls_dir, check_s=0.1)
    settings = Settings(data_dir=tmp_path / "data", database_url="", host="127.0.0.1", port=0, trust_store="", receipt_key="")
    running = create_server(settings, address="127.0.0.1:0", credentials=tls.credentials())
    try:
        assert answers(running.port, pki_a / "admin") and not answers(running.port, pki_b / "admin")

        # A certificate without its key (a copy caught half-way): what is in force stays.
        replace_file(tls_dir / "cert.pem", (pki_b / "service" / "cert.pem").read_bytes())
        time.sleep(0.3)
        assert answers(running.port, pki_a / "admin") and tls.reloads == 0

        # The whole new material (another CA, the service's certificate and key from it): A's clients are out.
        for name in ("ca.pem", "key.pem"):
            replace_file(tls_dir / name, (pki_b / "service" / name).read_bytes())
        assert eventually(lambda: answers(running.port, pki_b / "admin"))
        assert not answers(running.port, pki_a / "admin") and tls.reloads == 1
    finally:
        running.stop(0)
