"""The `ecert` command line. Each role's commands live in client/commands/; this file wires them."""
from __future__ import annotations

import typer

from client.commands import audit, certificate, db, pki, receipt, reference, serve, submit
from client.commands import demo, gateway, relay  # the simulated partner side
from client.commands import claim, quota  # customs' claims and the quota view

app = typer.Typer(help="eCERT certification service: serve, transmit, match, audit.", no_args_is_help=True)
serve.register(app)
relay.register(app)
app.add_typer(db.app, name="db")
app.add_typer(receipt.app, name="receipt")
app.add_typer(pki.app, name="pki")
submit.register(app)
app.add_typer(certificate.app, name="certificate")
app.add_typer(claim.app, name="claim")
app.add_typer(quota.app, name="quota")
app.add_typer(gateway.app, name="gateway")
demo.register(app)
app.add_typer(audit.app, name="audit")
app.add_typer(reference.app, name="reference")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
