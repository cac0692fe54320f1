"""A development PKI: a certificate authority and a TLS certificate per party, plus document keys.

Roles, partner countries and importer numbers travel in subject-alternative-name URIs (see
contract/identity.py). TLS keys are ECDSA P-256; the partner's document-signing key and
customs' receipt-signing key are separate Ed25519 keys, as in production.

Layout written by `init_pki(DIR)`, one folder per party (each a `--tls-dir`):

    ca/ca.pem, ca/ca-key.pem                    the authority (keep ca-key.pem away from services)
    <party>/ca.pem, cert.pem, key.pem           trust anchor, certificate chain, private key
    service/partner-keys.json                   trust store of partners' document-signing keys
    service/receipt-signing.pem (+ .pub)        customs' receipt-signing key
    service/log-signing.pem                     customs' transparency-log checkpoint key
    gateway-mx/document-signing.pem, .key-id    Mexico's document-signing key and its registered id
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pathlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contract.identity import Identity, Role
from contract.keys import public_key_pem, save_private_key, trust_entry, write_trust_store
from contract.signing import Signer

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_IMPORTER = "12-345678900"
# Which party folders `init_pki` makes, and who they are.
PARTIES: dict[str, Identity] = {
    "service": Identity("ecert certification service", Role.SERVICE),
    "relay": Identity("network-provider relay", Role.RELAY, frozenset({"MX"})),
    "gateway-mx": Identity("Mexico SE eCERT gateway", Role.PARTNER, frozenset({"MX"})),
    "customs": Identity("customs matching service", Role.CUSTOMS),
    "importer": Identity("importer of record 12-345678900", Role.IMPORTER, importers=frozenset({DEFAULT_IMPORTER})),
    "admin": Identity("ecert administrator", Role.ADMIN),
    "witness": Identity("log witness", Role.WITNESS),
}
SERVERS = ("service", "relay")  # parties that also listen (server certificates with DNS/IP names)


@dataclass(frozen=True)
class Authority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def new_authority(name: str = "ecert development CA", *, not_before: dt.datetime | None = None, days: int = 3650) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or _now() - dt.timedelta(hours=1)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def issue(
    authority: Authority,
    identity: Identity,
    *,
    server_names: tuple[str, ...] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    """A leaf certificate for one party: client auth always, server auth when it has server names."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or _now() - dt.timedelta(hours=1)
    end = not_after or start + dt.timedelta(days=825)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in identity.to_uris()]
    for name in server_names:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server_names else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.subject)]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(authority.key, hashes.SHA256()), key)


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write_private(path: pathlib.Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_party(directory: str | pathlib.Path, authority: Authority, issued: Issued) -> pathlib.Path:
    """One `--tls-dir`: ca.pem (whom to trust), cert.pem (who I am), key.pem."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.pem").write_bytes(pem(authority.certificate))
    (directory / "cert.pem").write_bytes(pem(issued.certificate))
    _write_private(directory / "key.pem", key_pem(issued.key))
    return directory


@dataclass(frozen=True)
class PkiLayout:
    root: pathlib.Path

    def party(self, name: str) -> pathlib.Path:
        return self.root / name

    @property
    def trust_store(self) -> pathlib.Path:
        return self.root / "service" / "partner-keys.json"

    @property
    def receipt_key(self) -> pathlib.Path:
        return self.root / "service" / "receipt-signing.pem"

    @property
    def document_key(self) -> pathlib.Path:
        return self.root / "gateway-mx" / "document-signing.pem"

    def document_signer(self) -> Signer:
        from contract.keys import load_signer

        key_id = (self.root / "gateway-mx" / "document-signing.key-id").read_text().strip()
        return load_signer(self.document_key, key_id)


def init_pki(directory: str | pathlib.Path, *, now: dt.datetime | None = None, server_names: tuple[str, ...] = ()) -> PkiLayout:
    """Make the authority, every party's TLS certificate and the two document keys. The service's and the
    relay's certificates name loopback and `server_names` (e.g. the host names of a compose file)."""
    layout = PkiLayout(pathlib.Path(directory))
    start = (now or _now()) - dt.timedelta(hours=1)
    authority = new_authority(not_before=start)
    (layout.root / "ca").mkdir(parents=True, exist_ok=True)
    (layout.root / "ca" / "ca.pem").write_bytes(pem(authority.certificate))
    _write_private(layout.root / "ca" / "ca-key.pem", key_pem(authority.key))
    for name, identity in PARTIES.items():
        names = (*SERVER_NAMES, *server_names) if name in SERVERS else ()
        write_party(layout.party(name), authority, issue(authority, identity, server_names=names, not_before=start))

    # Mexico's document-signing key (not its TLS key), registered with customs' trust store.
    signer = Signer(f"mx-se-{start.year}-1", Ed25519PrivateKey.generate())
    save_private_key(layout.document_key, signer.private_key)
    (layout.root / "gateway-mx" / "document-signing.key-id").write_text(signer.key_id + "\n")
    (layout.root / "gateway-mx" / "document-signing.pub").write_text(public_key_pem(signer.public_key))
    write_trust_store(layout.trust_store, [trust_entry(signer, "MX", start, start + dt.timedelta(days=730))])

    receipt_key = Ed25519PrivateKey.generate()
    save_private_key(layout.receipt_key, receipt_key)
    (layout.root / "service" / "receipt-signing.pem.pub").write_text(public_key_pem(receipt_key.public_key()))
    # The log's checkpoint key, where the service looks for it by default (beside the receipt key).
    save_private_key(layout.root / "service" / "log-signing.pem", Ed25519PrivateKey.generate())
    return layout


def load_authority(directory: str | pathlib.Path) -> Authority:
    """The authority written by init_pki (DIR/ca), to issue more certificates (tests, new parties)."""
    directory = pathlib.Path(directory)
    certificate = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Authority(certificate, key)


# -- revocation -----------------------------------------------------------------------------------

CRL_DAYS = 30  # how long a CRL written here is valid (its nextUpdate): write a new one before then


def crl_path(directory: str | pathlib.Path) -> pathlib.Path:
    """The authority's copy of its CRL in a PKI folder made by init_pki (DIR/ca/crl.pem)."""
    return pathlib.Path(directory) / "ca" / "crl.pem"


def _existing_entries(path: pathlib.Path, authority: Authority) -> tuple[list[x509.RevokedCertificate], int]:
    """The entries and CRL number of the CRL at `path`, if it is this authority's; ValueError if it is not."""
    if not path.exists():
        return [], 0
    crl = x509.load_pem_x509_crl(path.read_bytes())
    if crl.issuer != authority.certificate.subject or not crl.is_signature_valid(authority.key.public_key()):
        raise ValueError(f"{path} is not a CRL of {authority.certificate.subject.rfc4514_string()!r}: not updated")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    return list(crl), number


def write_crl(
    authority: Authority,
    path: str | pathlib.Path,
    revoke: dict[int, str] | None = None,
    *,
    now: dt.datetime | None = None,
    days: float = CRL_DAYS,
) -> x509.CertificateRevocationList:
    """Writes the authority's CRL at `path` (atomically: beside it, then renamed over it): the serials it
    already lists plus `revoke` (serial -> RFC 5280 reason name), a CRL number one higher, thisUpdate now
    and nextUpdate `days` later. Without `revoke` it renews the list as it is."""
    path = pathlib.Path(path)
    at = now or _now()
    entries, number = _existing_entries(path, authority)
    listed = {entry.serial_number for entry in entries}
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.certificate.subject)
        .last_update(at)
        .next_update(at + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number + 1), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False)
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    for serial, reason in (revoke or {}).items():
        if serial in listed:
            continue
        revoked = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at)
        flag = x509.ReasonFlags(reason)  # ValueError for a name RFC 5280 does not have
        if flag is not x509.ReasonFlags.unspecified:  # RFC 5280: leave the reason out rather than say unspecified
            revoked = revoked.add_extension(x509.CRLReason(flag), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    crl = builder.sign(authority.key, hashes.SHA256())
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.replace(temporary, path)
    return crl


def serial_of(certificate_file: str | pathlib.Path, authority: Authority) -> int:
    """The serial number of a certificate this authority issued; ValueError for one it did not."""
    certificate = x509.load_pem_x509_certificate(pathlib.Path(certificate_file).read_bytes())
    try:
        certificate.verify_directly_issued_by(authority.certificate)
    except (ValueError, TypeError, InvalidSignature):
        raise ValueError(f"{certificate_file} was not issued by {authority.certificate.subject.rfc4514_string()!r} "
                         f"(its issuer: {certificate.issuer.rfc4514_string()!r})") from None
    return certificate.serial_number
