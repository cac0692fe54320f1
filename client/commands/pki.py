"""`ecert pki init DIR`: a development certificate authority and every party's credentials."""
from __future__ import annotations

import pathlib

import typer

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
    from server.adapters.tls import identity_of_certificate

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
