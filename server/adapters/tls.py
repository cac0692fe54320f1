"""TLS material on disk (a `--tls-dir`: ca.pem, cert.pem, key.pem) and identities from certificates."""
from __future__ import annotations

import functools
import pathlib

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from contract.identity import Identity, identity_from_uris

CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "cert.pem", "key.pem"


class TlsMaterialMissing(RuntimeError):
    pass


def _read(directory: pathlib.Path) -> tuple[bytes, bytes, bytes]:
    paths = [directory / name for name in (CA_FILE, CERT_FILE, KEY_FILE)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise TlsMaterialMissing(f"TLS material missing: {', '.join(missing)} (make it with `ecert pki init`)")
    ca, cert, key = (p.read_bytes() for p in paths)
    return ca, cert, key


def server_credentials(directory: str | pathlib.Path) -> grpc.ServerCredentials:
    """Mutual TLS: a client must present a certificate chaining to ca.pem, or the handshake fails."""
    ca, cert, key = _read(pathlib.Path(directory))
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(directory: str | pathlib.Path) -> grpc.ChannelCredentials:
    ca, cert, key = _read(pathlib.Path(directory))
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def secure_channel(target: str, directory: str | pathlib.Path, options: list[tuple[str, object]] | None = None) -> grpc.Channel:
    return grpc.secure_channel(target, channel_credentials(directory), options=options or [])


@functools.lru_cache(maxsize=1024)
def identity_of_certificate(pem: bytes) -> Identity:
    """Read role, countries and importer numbers from a certificate's SAN URIs (see domain/identity)."""
    certificate = x509.load_pem_x509_certificate(pem)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    subject = str(names[0].value) if names else certificate.subject.rfc4514_string()
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return identity_from_uris(subject, uris)


def peer_identity(context: grpc.ServicerContext) -> Identity | None:
    """The authenticated caller of a call on a mutual-TLS server; None when there is no client certificate."""
    certificates = context.auth_context().get("x509_pem_cert") or []
    return identity_of_certificate(bytes(certificates[0])) if certificates else None
