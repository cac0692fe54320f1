"""The certificate revocation list (CRL) of TLS client certificates, followed while a server runs.

The operator keeps one X.509 CRL (PEM) signed by the authority in the server's `ca.pem` (`ecert pki
revoke` writes one); the service and the relay each follow theirs. gRPC Python cannot check a CRL during
the handshake, so the authorizer (service_kit/authorization.py) asks `RevocationList.refusal` on every call: a client whose certificate is on the
list is refused UNAUTHENTICATED with the reason CERTIFICATE_REVOKED, on new and already open connections
alike, within about a second of the file's change.

A CRL is put in force only when its signature verifies against a certificate of `ca.pem` whose subject
is the CRL's issuer and it is within its validity (thisUpdate not ahead of the clock, nextUpdate not
passed). Otherwise one ERROR line says why, and the list in force stays. At start there is nothing to
fall back on: a CRL that is configured but missing or invalid stops the start (RevocationListInvalid).
A CRL in force whose nextUpdate passes stays in force (its serials stay refused) with one WARNING line
asking for a new one.

Revoked document-signing keys are not here: they are listed in the partners' trust store (the
service's server/adapters/keystore.py, "revoked"), which is followed by its own watcher.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import pathlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc
from cryptography import x509

from contract.tls_files import CA_FILE
from contract.errors import DomainError, ErrorKind
from service_kit.watched_files import file_signature

log = logging.getLogger(__name__)

CRL_FILE = "crl.pem"  # the default list: beside the TLS folder's ca.pem
# How far a CRL's thisUpdate may be ahead of this server's clock (the CA's clock may run a little ahead).
CLOCK_TOLERANCE = dt.timedelta(minutes=5)


class RevocationListInvalid(ValueError):
    """A CRL that cannot be put in force; the message says which file and why, in one line."""


@dataclass(frozen=True)
class Revoked:
    """The serial numbers one authority revoked, as of one CRL."""

    issuer: bytes  # the authority's name, DER
    serials: Mapping[int, str]  # serial number -> reason (RFC 5280 name, "unspecified" without one)
    number: int | None  # the CRL number, when the CRL carries one
    next_update: dt.datetime

    def reason(self, issuer: bytes, serial: int) -> str | None:
        return self.serials.get(serial) if issuer == self.issuer else None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def read_crl(path: pathlib.Path, ca_path: pathlib.Path, now: dt.datetime) -> Revoked:
    """The CRL at `path`, checked against the authorities in `ca_path`; RevocationListInvalid otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RevocationListInvalid(f"revocation list {path}: {exc.strerror or exc}") from None
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise RevocationListInvalid(f"revocation list {path}: not a PEM X.509 CRL ({_one_line(exc)})") from None
    try:
        authorities = x509.load_pem_x509_certificates(ca_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise RevocationListInvalid(f"revocation list {path}: cannot read the authority {ca_path} to check it against "
                                    f"({getattr(exc, 'strerror', None) or _one_line(exc)})") from None
    issuers = [ca for ca in authorities if ca.subject == crl.issuer]
    if not issuers:
        raise RevocationListInvalid(f"revocation list {path}: issued by {crl.issuer.rfc4514_string()!r}, "
                                    f"not by an authority in {ca_path}")
    if not any(_may_sign_crls(ca) and crl.is_signature_valid(ca.public_key()) for ca in issuers):  # type: ignore[arg-type]  # CA keys are signing keys
        raise RevocationListInvalid(f"revocation list {path}: its signature does not verify against "
                                    f"{crl.issuer.rfc4514_string()!r} in {ca_path}")
    next_update = crl.next_update_utc
    if next_update is None:
        raise RevocationListInvalid(f"revocation list {path}: it has no nextUpdate")
    if next_update <= now:
        raise RevocationListInvalid(f"revocation list {path}: expired at {next_update.isoformat()} (its nextUpdate)")
    if crl.last_update_utc > now + CLOCK_TOLERANCE:
        raise RevocationListInvalid(f"revocation list {path}: not valid before {crl.last_update_utc.isoformat()} (its thisUpdate)")
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return Revoked(crl.issuer.public_bytes(), {entry.serial_number: _reason(entry) for entry in crl}, number, next_update)


def _may_sign_crls(ca: x509.Certificate) -> bool:
    try:
        return bool(ca.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign)
    except x509.ExtensionNotFound:
        return True  # no key usage: unrestricted


def _reason(entry: x509.RevokedCertificate) -> str:
    try:
        return str(entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value)
    except x509.ExtensionNotFound:
        return "unspecified"


@functools.lru_cache(maxsize=1024)
def issuer_and_serial(pem: bytes) -> tuple[bytes, int]:
    certificate = x509.load_pem_x509_certificate(pem)
    return certificate.issuer.public_bytes(), certificate.serial_number


class RevocationList:
    """The CRL in force for one TLS server, read again when its file (or the authority's) changes."""

    def __init__(self, path: pathlib.Path, ca_path: pathlib.Path, *, required: bool,
                 clock: Callable[[], dt.datetime] = _now, interval_s: float = 1.0):
        self.path = path
        self.ca_path = ca_path
        self.clock = clock
        self.interval_s = interval_s
        self.reloads = 0
        self._seen = file_signature([path, ca_path])
        self._stale_warned = False
        self.current: Revoked | None = None
        if path.exists() or required:
            self.current = read_crl(path, ca_path, clock())  # at start an invalid list stops the start
            log.info("revocation list %s in force: %d revoked certificates", path, len(self.current.serials),
                     extra={"event": "revocation_list_loaded"})

    @classmethod
    def for_tls_dir(cls, tls_dir: pathlib.Path, configured: str | pathlib.Path | None, *, interval_s: float = 1.0) -> RevocationList:
        """The list `configured` (required to exist), else `crl.pem` in the TLS folder (followed if it appears)."""
        if configured:
            return cls(pathlib.Path(configured), tls_dir / CA_FILE, required=True, interval_s=interval_s)
        return cls(tls_dir / CRL_FILE, tls_dir / CA_FILE, required=False, interval_s=interval_s)

    def revocation_reason(self, certificate_pem: bytes) -> str | None:
        current = self.current
        if current is None:
            return None
        return current.reason(*issuer_and_serial(certificate_pem))

    def refusal(self, context: grpc.ServicerContext, method: str) -> DomainError | None:
        """The error for a caller whose client certificate is revoked; None for any other caller."""
        current = self.current
        if current is None or not current.serials:  # nothing revoked: no need to read the peer's certificate
            return None
        certificates = context.auth_context().get("x509_pem_cert") or []
        if not certificates:
            return None
        pem = bytes(certificates[0])
        reason = self.revocation_reason(pem)
        if reason is None:
            return None
        return DomainError(
            "CERTIFICATE_REVOKED", "the client certificate was revoked", ErrorKind.UNAUTHENTICATED,
            metadata={"method": method, "serial": f"{issuer_and_serial(pem)[1]:x}", "revocation_reason": reason},
        )

    def check(self) -> bool:
        """True when a new list was put in force."""
        now = self.clock()
        current = self.current
        if current is not None and current.next_update <= now and not self._stale_warned:
            self._stale_warned = True
            log.warning("revocation list %s passed its nextUpdate %s: its revocations stay in force; issue a new one "
                        "(ecert pki revoke)", self.path, current.next_update.isoformat())
        signature = file_signature([self.path, self.ca_path])
        if signature == self._seen:
            return False
        self._seen = signature
        try:
            revoked = read_crl(self.path, self.ca_path, now)
        except RevocationListInvalid as exc:
            log.error("%s; the revocation list in force stays", exc, extra={"event": "revocation_list_refused"})
            return False
        self.current = revoked
        self._stale_warned = False
        self.reloads += 1
        log.info("revocation list %s reloaded: %d revoked certificates", self.path, len(revoked.serials),
                 extra={"event": "revocation_list_reloaded"})
        return True

    def watch(self, stop: threading.Event) -> threading.Thread:
        def run() -> None:
            while not stop.wait(self.interval_s):
                try:
                    self.check()
                except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                    log.exception("revocation list watch failed")

        thread = threading.Thread(target=run, name="revocation-list-watch", daemon=True)
        thread.start()
        return thread
