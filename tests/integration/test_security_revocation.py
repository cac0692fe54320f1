"""Revocation without a restart: a CRL of TLS client certificates (service_kit/revocation.py) and
revoked document-signing keys in the trust store. Real servers on real ports, a real PKI, the CRL and
the trust store rewritten by `ecert pki revoke` as an operator would, on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import itertools
import logging
import pathlib
import re
import shutil
import time
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from client.pki import PkiLayout, init_pki, load_authority, new_authority, write_crl
from client.tls import channel_credentials, server_credentials
from contract.keys import load_signer
from contract.messages import receipt_from_proto
from ecert.v1 import transmission_pb2 as tpb
from ecert.v1 import transmission_pb2_grpc
from gateway_sim.relay.app import RelaySettings, create_relay
from service_kit.revocation import RevocationListInvalid
from server.app import RunningServer, create_server
from server.config import Settings
from tests.factories import certificate, envelope
from tests.grpc_errors import rich_error
from tests.operators.conftest import ecert

TABLES = ("transmissions", "certificate_versions", "certificates")


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    """A PKI of this module's own (`ecert pki init`): the tests write CRLs of its authority."""
    return init_pki(tmp_path_factory.mktemp("pki-revocation"))


def revoke(layout: PkiLayout, *args: str) -> str:
    """`ecert pki revoke DIR ARGS` as an operator runs it."""
    done = ecert("pki", "revoke", str(layout.root), *args, cwd=layout.root)
    assert done.code == 0, done.stderr
    return done.stdout


def start(layout: PkiLayout, tmp_path: pathlib.Path, database_url: str, crl: pathlib.Path,
          trust_store: pathlib.Path | None = None) -> RunningServer:
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, host="127.0.0.1", port=0,
        trust_store=str(trust_store or layout.trust_store), receipt_key=str(layout.receipt_key),
        tls_dir=str(layout.party("service")), revocation_list=str(crl),
    )
    return create_server(settings, address="127.0.0.1:0", credentials=server_credentials(layout.party("service")))


@pytest.fixture
def crl(layout: PkiLayout, tmp_path: pathlib.Path) -> pathlib.Path:
    """An empty CRL of the PKI's authority, where this test's service reads it."""
    path = tmp_path / "crl.pem"
    revoke(layout, "--crl", str(path))  # no serial: writes (renews) the list as it is
    return path


def snapshot(server: RunningServer) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    with server.database.read_engine.connect() as connection:
        return {t: sorted(map(tuple, connection.execute(text(f"SELECT * FROM {t}")))) for t in TABLES}


class Party:
    """One client with one open connection, kept across revocations (as a long-lived gateway would)."""

    numbers = itertools.count(1)

    def __init__(self, layout: PkiLayout, name: str, port: int):
        self.layout = layout
        self.channel = grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(layout.party(name)))
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.transmissions = transmission_pb2_grpc.TransmissionServiceStub(self.channel)

    def check(self) -> str:
        try:
            self.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            return "SERVING"
        except grpc.RpcError as error:
            return rich_error(error).reason or error.code().name

    def submit(self) -> tpb.SubmitCertificateResponse:
        n = next(self.numbers)
        signed = envelope(self.layout.document_signer(), certificate(f"MX26-{n:08d}"), message_id=f"revocation-{n}", sent_at=now())
        return self.transmissions.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=signed), timeout=10)

    def close(self) -> None:
        self.channel.close()


# -- TLS client certificates ---------------------------------------------------------------------------


def test_a_revoked_client_certificate_is_refused_on_its_open_connection_while_others_work(layout, tmp_path, database_url, crl):
    server = start(layout, tmp_path, database_url, crl)
    relay, gateway = Party(layout, "relay", server.port), Party(layout, "gateway-mx", server.port)
    try:
        assert relay.submit().receipt.outcome == tpb.TRANSMISSION_OUTCOME_ACCEPTED
        assert gateway.check() == "SERVING"

        printed = revoke(layout, "--cert", str(layout.party("relay") / "cert.pem"), "--crl", str(crl))
        assert "revoked (keyCompromise)" in printed and "1 revoked" in printed
        assert eventually(lambda: relay.check() == "CERTIFICATE_REVOKED")  # the same connection, refused

        before = snapshot(server)
        with pytest.raises(grpc.RpcError) as caught:
            relay.submit()
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "CERTIFICATE_REVOKED")
        assert error.metadata["revocation_reason"] == "keyCompromise"
        assert error.metadata["method"] == "/ecert.v1.TransmissionService/SubmitCertificate"
        assert snapshot(server) == before  # refused before any handler ran: nothing stored
        # A new connection with the revoked certificate completes its handshake (gRPC cannot check a CRL
        # there) and is refused at its first call all the same.
        fresh = Party(layout, "relay", server.port)
        assert fresh.check() == "CERTIFICATE_REVOKED"
        fresh.close()

        assert gateway.check() == "SERVING"  # another client of the same authority works on
        assert gateway.submit().receipt.outcome == tpb.TRANSMISSION_OUTCOME_ACCEPTED
    finally:
        relay.close()
        gateway.close()
        server.stop(0)


def test_a_crl_from_another_authority_or_expired_is_refused_and_the_one_in_force_stays(layout, tmp_path, database_url, crl, caplog):
    caplog.set_level(logging.INFO, logger="service_kit.revocation")
    revoke(layout, "--cert", str(layout.party("relay") / "cert.pem"), "--crl", str(crl))
    server = start(layout, tmp_path, database_url, crl)
    relay, admin = Party(layout, "relay", server.port), Party(layout, "admin", server.port)
    authority = load_authority(layout.root / "ca")
    # Same name as the real authority, another key: only the signature tells them apart.
    impostor = new_authority(authority.certificate.subject.rfc4514_string().removeprefix("CN="))
    stranger = new_authority("some other CA")

    def refused_with(build: Callable[[pathlib.Path], object], why: str) -> None:
        staged = tmp_path / "staged.pem"
        staged.unlink(missing_ok=True)
        build(staged)
        shutil.copyfile(staged, tmp_path / "crl.pem.new")
        (tmp_path / "crl.pem.new").replace(crl)  # as an operator replaces it: atomically
        assert eventually(lambda: why in caplog.text), caplog.text
        lines = [r for r in caplog.records if r.levelno == logging.ERROR and why in r.getMessage()]
        assert len(lines) == 1 and "\n" not in lines[0].getMessage() and "in force stays" in lines[0].getMessage()
        assert relay.check() == "CERTIFICATE_REVOKED" and admin.check() == "SERVING"  # the previous list, in force

    try:
        assert relay.check() == "CERTIFICATE_REVOKED" and admin.check() == "SERVING"
        before = snapshot(server)
        refused_with(lambda path: write_crl(impostor, path), "its signature does not verify")
        refused_with(lambda path: write_crl(stranger, path), "not by an authority in")
        refused_with(lambda path: write_crl(authority, path, now=now() - dt.timedelta(days=40), days=30), "expired at")
        refused_with(lambda path: path.write_text("-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n"),
                     "not a PEM X.509 CRL")
        # An empty list of the real authority is put in force: the relay is back (what a reload looks like).
        write_crl(authority, tmp_path / "empty.pem")
        (tmp_path / "empty.pem").replace(crl)
        assert eventually(lambda: relay.check() == "SERVING")
        assert "reloaded: 0 revoked certificates" in caplog.text
        assert relay.submit().receipt.outcome == tpb.TRANSMISSION_OUTCOME_ACCEPTED
        assert len(snapshot(server)["certificates"]) == len(before["certificates"]) + 1
    finally:
        relay.close()
        admin.close()
        server.stop(0)


@pytest.mark.parametrize("problem", ["missing", "expired", "foreign"])
def test_a_named_crl_that_cannot_be_used_stops_the_start(layout, tmp_path, problem):
    crl = tmp_path / "crl.pem"
    if problem == "expired":
        write_crl(load_authority(layout.root / "ca"), crl, now=now() - dt.timedelta(days=2), days=1)
    elif problem == "foreign":
        write_crl(new_authority("some other CA"), crl)
    with pytest.raises(RevocationListInvalid, match=re.escape(f"revocation list {crl}: ")):
        start(layout, tmp_path, "", crl)
    assert not (tmp_path / "data" / "ecert.db").exists()  # refused before touching the database


def test_the_relay_refuses_a_revoked_partner_certificate(layout, tmp_path, crl):
    relay = create_relay(RelaySettings(store=tmp_path / "relay.db", service="127.0.0.1:1", tls_dir=layout.party("relay"),
                                       revocation_list=crl))
    gateway, importer = Party(layout, "gateway-mx", relay.port), Party(layout, "importer", relay.port)
    try:
        assert gateway.check() == "SERVING"
        revoke(layout, "--cert", str(layout.party("gateway-mx") / "cert.pem"), "--reason", "affiliationChanged", "--crl", str(crl))
        assert eventually(lambda: gateway.check() == "CERTIFICATE_REVOKED")
        assert importer.check() == "SERVING"
    finally:
        gateway.close()
        importer.close()
        relay.stop(0)


# -- partners' document-signing keys ---------------------------------------------------------------------


def test_a_revoked_signing_key_gets_a_signed_rejection_and_what_it_signed_before_stays(layout, tmp_path, database_url, crl):
    trust_store = tmp_path / "partner-keys.json"
    shutil.copyfile(layout.trust_store, trust_store)
    server = start(layout, tmp_path, database_url, crl, trust_store)
    gateway = Party(layout, "gateway-mx", server.port)
    receipt_key = load_signer(layout.receipt_key, "any").public_key
    key_id = layout.document_signer().key_id
    try:
        first_envelope = envelope(layout.document_signer(), certificate("MX26-70000001"), message_id="before-revocation", sent_at=now())
        first = gateway.transmissions.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=first_envelope), timeout=10)
        assert first.receipt.outcome == tpb.TRANSMISSION_OUTCOME_ACCEPTED
        stored = gateway.transmissions.GetCertificate(
            tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-70000001"), timeout=10)

        printed = revoke(layout, "--key-id", key_id, "--trust-store", str(trust_store))
        assert f"document-signing key {key_id} revoked" in printed

        def rejected() -> grpc.RpcError | None:
            try:
                gateway.submit()
                return None
            except grpc.RpcError as error:
                return error if rich_error(error).reason == "SIGNING_KEY_REVOKED" else None

        assert eventually(lambda: rejected() is not None)
        before = snapshot(server)
        error = rejected()
        assert error is not None and snapshot(server) == before  # the rejection stores nothing
        detail = rich_error(error)
        assert detail.code == grpc.StatusCode.INVALID_ARGUMENT and detail.fields == {"envelope.key_id": "SIGNING_KEY_REVOKED"}
        assert detail.receipt is not None and detail.receipt.outcome == tpb.TRANSMISSION_OUTCOME_REJECTED
        assert receipt_from_proto(detail.receipt).verify(receipt_key)  # signed by customs, for the partner to keep
        assert any(i.code == "SIGNING_KEY_REVOKED" for i in detail.receipt.issues)

        # What the key signed before stays as it was, and a retry of it gets its original receipt back.
        again = gateway.transmissions.GetCertificate(
            tpb.GetCertificateRequest(issuing_country="MX", certificate_number="MX26-70000001"), timeout=10)
        assert again == stored
        replay = gateway.transmissions.SubmitCertificate(tpb.SubmitCertificateRequest(envelope=first_envelope), timeout=10)
        assert replay.receipt == first.receipt
        # The TLS certificate of the same partner is not revoked: reads go on.
        assert gateway.check() == "SERVING"
    finally:
        gateway.close()
        server.stop(0)


def test_a_trust_store_with_a_malformed_revoked_entry_is_not_reloaded(layout, tmp_path, database_url, crl, caplog):
    trust_store = tmp_path / "partner-keys.json"
    shutil.copyfile(layout.trust_store, trust_store)
    server = start(layout, tmp_path, database_url, crl, trust_store)
    gateway = Party(layout, "gateway-mx", server.port)
    try:
        assert gateway.submit().receipt.outcome == tpb.TRANSMISSION_OUTCOME_ACCEPTED
        broken = trust_store.read_text().rstrip().removesuffix("}") + ', "revoked": [{"reason": "keyCompromise"}]}\n'
        (tmp_path / "partner-keys.json.new").write_text(broken)
        (tmp_path / "partner-keys.json.new").replace(trust_store)
        assert eventually(lambda: "not reloaded" in caplog.text)
        assert 'a "revoked" entry without a key_id' in caplog.text
        assert gateway.submit().receipt.outcome == tpb.TRANSMISSION_OUTCOME_ACCEPTED  # the keys in force stay
    finally:
        gateway.close()
        server.stop(0)


def test_revoke_refuses_a_certificate_of_another_authority_and_a_crl_it_did_not_sign(layout, tmp_path):
    foreign = tmp_path / "foreign.pem"
    write_crl(new_authority("some other CA"), foreign)
    done = ecert("pki", "revoke", str(layout.root), "--serial", "0x1234", "--crl", str(foreign), cwd=tmp_path)
    assert done.code == 2 and done.error_lines == [f"error: CRL {foreign}: {foreign} is not a CRL of "
                                                   f"'CN=ecert development CA': not updated"]
    other = init_pki(tmp_path / "other")
    done = ecert("pki", "revoke", str(layout.root), "--cert", str(other.party("relay") / "cert.pem"), cwd=tmp_path)
    assert done.code == 2 and len(done.error_lines) == 1 and "was not issued by 'CN=ecert development CA'" in done.stderr
    done = ecert("pki", "revoke", str(layout.root), "--serial", "7", "--reason", "whoKnows", cwd=tmp_path)
    assert done.code == 2 and "--reason 'whoKnows': one of keyCompromise" in done.stderr
