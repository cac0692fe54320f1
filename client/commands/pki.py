"""`ecert pki init DIR`: a development certificate authority and every party's credentials."""
from __future__ import annotations

import pathlib

import typer

app = typer.Typer(help="Development PKI: TLS certificates with roles, document-signing keys.", no_args_is_help=True)


@app.command()
def init(
    directory: pathlib.Path = typer.Argument(..., help="folder to create (one sub-folder per party)"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing PKI in DIR"),
) -> None:
    """Make a CA, TLS certificates (service, relay, gateway-mx, customs, importer, admin) and Ed25519 keys."""
    from client.pki import PARTIES, init_pki
    from server.adapters.tls import identity_of_certificate

    if (directory / "ca" / "ca.pem").exists() and not force:
        typer.echo(f"error: {directory} already holds a PKI (use --force to replace it)", err=True)
        raise typer.Exit(2)
    layout = init_pki(directory)
    for name in PARTIES:
        identity = identity_of_certificate((layout.party(name) / "cert.pem").read_bytes())
        typer.echo(f"{name:<11} {' '.join(identity.to_uris())}")
    typer.echo(f"document-signing key {layout.document_signer().key_id} registered in {layout.trust_store}")
    typer.echo(f"receipt-signing key {layout.receipt_key}")
