"""`ecert pki init DIR`: a development certificate authority and every party's credentials; `ecert pki revoke`:
its certificate revocation list and revoked document-signing keys."""
from __future__ import annotations

import pathlib
from typing import Optional

import typer

# RFC 5280's reasons for revoking a certificate (CRLReason), by their names there.
REASON_NAMES = ("keyCompromise", "cACompromise", "affiliationChanged", "superseded", "cessationOfOperation",
                "certificateHold", "privilegeWithdrawn", "unspecified")

app = typer.Typer(help="Development PKI: TLS certificates with roles, document-signing keys.", no_args_is_help=True)


@app.command()
def init(
    directory: pathlib.Path = typer.Argument(..., help="folder to create (one sub-folder per party)"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing PKI in DIR"),
    if_missing: bool = typer.Option(False, "--if-missing", help="do nothing (exit 0) if DIR already holds a PKI"),
    server_name: list[str] = typer.Option([], "--server-name", help="a further DNS name or address the service's and "
                                                                     "the relay's certificates name (repeatable)"),
) -> None:
    """Make a CA, TLS certificates (service, relay, gateway-mx, customs, importer, admin, witness) and Ed25519 keys."""
    from client.pki import PARTIES, init_pki
    from contract.identity import identity_of_certificate

    if (directory / "ca" / "ca.pem").exists() and not force:
        if if_missing:
            typer.echo(f"{directory} already holds a PKI: kept")
            return
        typer.echo(f"error: {directory} already holds a PKI (use --force to replace it)", err=True)
        raise typer.Exit(2)
    layout = init_pki(directory, server_names=tuple(server_name))
    for name in PARTIES:
        identity = identity_of_certificate((layout.party(name) / "cert.pem").read_bytes())
        typer.echo(f"{name:<11} {' '.join(identity.to_uris())}")
    typer.echo(f"document-signing key {layout.document_signer().key_id} registered in {layout.trust_store}")
    typer.echo(f"receipt-signing key {layout.receipt_key}")


@app.command()
def revoke(
    directory: pathlib.Path = typer.Argument(..., help="the PKI folder (`ecert pki init DIR`): its ca/ holds the authority"),
    serial: Optional[str] = typer.Option(None, "--serial", help="serial number of the TLS certificate to revoke (decimal, or hex with 0x)"),
    cert: Optional[pathlib.Path] = typer.Option(None, "--cert", help="the TLS certificate to revoke (PEM)"),
    key_id: Optional[str] = typer.Option(None, "--key-id", help="a partner's document-signing key id to revoke in the trust store"),
    reason: str = typer.Option("keyCompromise", "--reason", help="RFC 5280 reason: " + ", ".join(REASON_NAMES)),
    crl: Optional[pathlib.Path] = typer.Option(None, "--crl", help="the CRL to write or update [default: DIR/ca/crl.pem]"),
    trust_store: Optional[pathlib.Path] = typer.Option(
        None, "--trust-store", help="with --key-id: the trust store to update [default: DIR/service/partner-keys.json]"),
    days: float = typer.Option(30.0, "--days", help="days until the CRL's nextUpdate"),
) -> None:
    """Revoke a TLS client certificate (a CRL signed by the authority) or a document-signing key (the trust store).

    Each file is rewritten atomically; a service (and relay) following it refuses the certificate
    (CERTIFICATE_REVOKED) or the key (SIGNING_KEY_REVOKED) within about a second. With neither --serial,
    --cert nor --key-id, the CRL is renewed as it is (new thisUpdate and nextUpdate)."""
    import datetime as dt

    from client.pki import crl_path, load_authority, serial_of, write_crl
    from server.adapters.keystore import revoke_key

    if sum(x is not None for x in (serial, cert, key_id)) > 1:
        raise _bad("give one of --serial, --cert, --key-id")
    if reason not in REASON_NAMES:
        raise _bad(f"--reason {reason!r}: one of {', '.join(REASON_NAMES)}")
    if key_id is not None:
        store = trust_store or directory / "service" / "partner-keys.json"
        try:
            added = revoke_key(store, key_id, reason, dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
        except (OSError, ValueError) as exc:
            raise _bad(f"trust store {store}: {getattr(exc, 'strerror', None) or exc}") from None
        from server.adapters.keystore import load_trust_store

        known = any(key.key_id == key_id for key in load_trust_store(store).keys())
        typer.echo(f"document-signing key {key_id} {'revoked' if added else 'was already revoked'} in {store}"
                   + ("" if known else " (no key with this id is registered there: refused before it ever is)"))
        return
    try:
        authority = load_authority(directory / "ca")
    except (OSError, ValueError) as exc:
        raise _bad(f"no authority in {directory / 'ca'} (ca.pem and ca-key.pem): {getattr(exc, 'strerror', None) or exc}") from None
    revoked: dict[int, str] = {}
    try:
        if cert is not None:
            revoked[serial_of(cert, authority)] = reason
        elif serial is not None:
            revoked[int(serial, 0)] = reason
    except OSError as exc:
        raise _bad(f"{cert}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise _bad(str(exc) if cert is not None else f"--serial {serial!r}: not a number (decimal, or hex with 0x)") from None
    target = crl or crl_path(directory)
    try:
        written = write_crl(authority, target, revoked, days=days)
    except (OSError, ValueError) as exc:
        raise _bad(f"CRL {target}: {getattr(exc, 'strerror', None) or exc}") from None
    for number in revoked:
        typer.echo(f"certificate serial {number:#x} revoked ({reason})")
    assert written.next_update_utc is not None
    typer.echo(f"CRL {target}: {len(written)} revoked, next update {written.next_update_utc.isoformat()}")


def _bad(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)
