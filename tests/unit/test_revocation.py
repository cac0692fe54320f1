"""The revocation list's checks (service_kit/revocation.py) and revoked keys in the trust store
(server/domain/trust_store.py), on real CRLs and keys made by the project's PKI code."""
from __future__ import annotations

import datetime as dt
import logging
import pathlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from client.pki import PARTIES, Authority, issue, new_authority, pem, write_crl
from contract.keys import load_public_key, trust_entry
from service_kit.revocation import RevocationList, RevocationListInvalid, read_crl
from server.domain.errors import DomainError
from server.domain.trust_store import TrustedKey, TrustStore
from tests.factories import NOW, new_signer

HOUR = dt.timedelta(hours=1)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


@pytest.fixture
def authority(tmp_path: pathlib.Path) -> Authority:
    made = new_authority()
    (tmp_path / "ca.pem").write_bytes(pem(made.certificate))
    return made


def test_a_crl_dated_ahead_of_the_clock_is_refused(authority, tmp_path):
    write_crl(authority, tmp_path / "crl.pem", now=now() + HOUR)
    with pytest.raises(RevocationListInvalid, match="not valid before"):
        read_crl(tmp_path / "crl.pem", tmp_path / "ca.pem", now())
    write_crl(authority, tmp_path / "soon.pem", now=now() + dt.timedelta(minutes=2))  # within the tolerance
    assert read_crl(tmp_path / "soon.pem", tmp_path / "ca.pem", now()).serials == {}


def test_an_authority_not_allowed_to_sign_crls_is_not_trusted_for_one(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certificates only CA")])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now() - HOUR).not_valid_after(now() + 24 * HOUR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, False, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "ca.pem").write_bytes(pem(certificate))
    write_crl(Authority(certificate, key), tmp_path / "crl.pem")
    with pytest.raises(RevocationListInvalid, match="signature does not verify"):
        read_crl(tmp_path / "crl.pem", tmp_path / "ca.pem", now())


def test_one_bundle_of_authorities_checks_the_crl_against_its_issuer(authority, tmp_path):
    other = new_authority("the next ecert CA")
    (tmp_path / "ca.pem").write_bytes(pem(other.certificate) + pem(authority.certificate))  # a CA move under way
    leaf = issue(authority, PARTIES["relay"])
    write_crl(authority, tmp_path / "crl.pem", {leaf.certificate.serial_number: "superseded"})
    revoked = read_crl(tmp_path / "crl.pem", tmp_path / "ca.pem", now())
    issuer = authority.certificate.subject.public_bytes()
    assert revoked.reason(issuer, leaf.certificate.serial_number) == "superseded"
    # The same serial from the other authority is another certificate.
    assert revoked.reason(other.certificate.subject.public_bytes(), leaf.certificate.serial_number) is None


def test_a_list_past_its_next_update_stays_in_force_with_one_warning(authority, tmp_path, caplog):
    leaf = issue(authority, PARTIES["importer"])
    write_crl(authority, tmp_path / "crl.pem", {leaf.certificate.serial_number: "keyCompromise"}, days=1)
    clock = [now()]
    revocations = RevocationList(tmp_path / "crl.pem", tmp_path / "ca.pem", required=True, clock=lambda: clock[0])
    assert revocations.revocation_reason(pem(leaf.certificate)) == "keyCompromise"
    clock[0] += dt.timedelta(days=2)
    with caplog.at_level(logging.WARNING, logger="service_kit.revocation"):
        assert not revocations.check() and not revocations.check()
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "passed its nextUpdate" in caplog.text and "stay in force" in caplog.text
    assert revocations.revocation_reason(pem(leaf.certificate)) == "keyCompromise"


def test_write_crl_keeps_what_was_revoked_and_counts_up(authority, tmp_path):
    write_crl(authority, tmp_path / "crl.pem", {1: "keyCompromise"})
    crl = write_crl(authority, tmp_path / "crl.pem", {2: "unspecified", 1: "superseded"})
    assert sorted(entry.serial_number for entry in crl) == [1, 2]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    reasons = read_crl(tmp_path / "crl.pem", tmp_path / "ca.pem", now()).serials
    assert reasons == {1: "keyCompromise", 2: "unspecified"}  # the first reason stays; unspecified is left out of the CRL
    with pytest.raises(ValueError, match="is not a CRL of"):
        write_crl(new_authority(), tmp_path / "crl.pem", {3: "keyCompromise"})


# -- revoked document-signing keys -------------------------------------------------------------------------


def test_a_revoked_key_is_refused_whatever_its_window_and_even_without_its_entry():
    signer = new_signer("mx-se-2026-1")
    entry = trust_entry(signer, "MX", NOW - HOUR, NOW + HOUR)
    key = TrustedKey(entry["key_id"], "MX", load_public_key(entry["public_key_pem"]), NOW - HOUR, NOW + HOUR)
    data = b"envelope bytes"
    for store in (TrustStore([key], revoked=["mx-se-2026-1"]), TrustStore([], revoked=["mx-se-2026-1"])):
        with pytest.raises(DomainError) as caught:
            store.verify(sender="MX", key_id="mx-se-2026-1", signature=signer.sign(data), data=data, signed_at=NOW)
        assert caught.value.reason == "SIGNING_KEY_REVOKED" and caught.value.findings[0].field == "key_id"
    assert TrustStore([key], revoked=["another"]).verify(sender="MX", key_id="mx-se-2026-1", signature=signer.sign(data),
                                                         data=data, signed_at=NOW) == key
