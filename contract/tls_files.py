"""A party's TLS material on disk, as `ecert pki init` writes it and every party reads it: a folder (a
`--tls-dir`) holding ca.pem (the authority to trust), cert.pem (the party's certificate) and key.pem."""
from __future__ import annotations

import pathlib

CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "cert.pem", "key.pem"


class TlsMaterialMissing(RuntimeError):
    pass


def read_tls_dir(directory: pathlib.Path) -> tuple[bytes, bytes, bytes]:
    """ca.pem, cert.pem and key.pem's bytes; TlsMaterialMissing names every file that is not there."""
    paths = [directory / name for name in (CA_FILE, CERT_FILE, KEY_FILE)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise TlsMaterialMissing(f"TLS material missing: {', '.join(missing)} (make it with `ecert pki init`)")
    ca, cert, key = (p.read_bytes() for p in paths)
    return ca, cert, key
