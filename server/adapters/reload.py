"""Material read from files and replaced while the service runs: the partners' trust store and the
service's TLS material. An operator replaces a file (best atomically: write beside it, then rename);
the change is in force within about a second, without a restart.

What was in force stays in force when the new file cannot be used (unreadable, not valid, a
certificate without its key): the error is logged, and the file is read again once it changes.
"""
from __future__ import annotations

import logging
import pathlib
import threading
import time
from collections.abc import Callable

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contract.tls_files import CA_FILE, CERT_FILE, KEY_FILE, read_tls_dir
from server.adapters.keystore import load_trust_store
from server.domain.trust_store import TrustStore
from service_kit.watched_files import file_signature

log = logging.getLogger(__name__)

class TrustStoreWatcher:
    """Reads the trust store again whenever its file changes and hands the new one to `apply`."""

    def __init__(self, path: pathlib.Path, apply: Callable[[TrustStore], None], *, interval_s: float = 1.0):
        self.path = path
        self.apply = apply
        self.interval_s = interval_s
        self._seen = file_signature([path])

    def check(self) -> bool:
        """True when a new trust store was put in force."""
        signature = file_signature([self.path])
        if signature == self._seen:
            return False
        self._seen = signature
        try:
            store = load_trust_store(self.path)
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, the keys in force stay
            log.error("trust store %s not reloaded, the keys in force stay: %s", self.path, " ".join(str(exc).split()))
            return False
        self.apply(store)
        log.info("trust store %s reloaded: %d keys, %d revoked", self.path, len(store), len(store.revoked),
                 extra={"event": "trust_store_reloaded"})
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("trust store watch failed")


def _matching_pair(cert: bytes, key: bytes) -> None:
    """Raises ValueError unless the PEM private key belongs to the PEM certificate."""
    public = x509.load_pem_x509_certificate(cert).public_key()
    private = serialization.load_pem_private_key(key, password=None)
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if public.public_bytes(*raw) != private.public_key().public_bytes(*raw):
        raise ValueError("key.pem is not the private key of cert.pem")


class ReloadingTls:
    """Mutual-TLS server credentials that follow the files in a --tls-dir: each new handshake asks gRPC's
    fetcher, which reads the files again when they changed (looked at most every `check_s` seconds).
    Connections already open keep the material they were made with."""

    def __init__(self, directory: str | pathlib.Path, *, check_s: float = 0.5):
        self.directory = pathlib.Path(directory)
        self.paths = [self.directory / name for name in (CA_FILE, CERT_FILE, KEY_FILE)]
        self.check_s = check_s
        ca, cert, key = read_tls_dir(self.directory)  # TlsMaterialMissing at start: nothing to fall back on
        _matching_pair(cert, key)
        self._seen = file_signature(self.paths)
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self.reloads = 0
        self.initial = grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self.initial, self.fetch, require_client_authentication=True)

    def fetch(self):  # type: ignore[no-untyped-def]  # grpc's certificate-configuration fetcher: grpc is untyped
        """gRPC's certificate-configuration fetcher: a new configuration, or None to keep the current one."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked < self.check_s:
                return None
            self._checked = now
            signature = file_signature(self.paths)
            if signature == self._seen:
                return None
            try:
                ca, cert, key = read_tls_dir(self.directory)
                x509.load_pem_x509_certificates(ca)
                _matching_pair(cert, key)
            except Exception as exc:  # noqa: BLE001 - a half-written or wrong file: keep what is in force
                log.error("TLS material in %s not reloaded, the material in force stays: %s", self.directory,
                          " ".join(str(exc).split()))
                return None  # read again at the next handshake, in case it was caught half-written
            self._seen = signature
            self.reloads += 1
            log.info("TLS material reloaded from %s", self.directory, extra={"event": "tls_reloaded"})
            return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)
