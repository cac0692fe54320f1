"""`ecert receipt verify`: check a receipt offline against customs' public key."""
from __future__ import annotations

import pathlib

import typer
from google.protobuf import json_format

app = typer.Typer(help="Customs receipts.", no_args_is_help=True)


@app.command()
def verify(
    receipt_file: pathlib.Path = typer.Argument(..., help="receipt as protobuf JSON (as `--json` prints it)"),
    public_key: pathlib.Path = typer.Option(..., help="customs' receipt-signing public key (PEM)"),
) -> None:
    """Exit 0 if customs signed this receipt exactly as it reads; 1 otherwise."""
    from ecert.v1 import transmission_pb2 as tpb
    from server.adapters.keystore import load_public_key
    from server.api.converters import receipt_from_proto

    try:
        message = json_format.Parse(receipt_file.read_text(encoding="utf-8"), tpb.Receipt())
        key = load_public_key(public_key.read_bytes())
    except (OSError, ValueError, json_format.ParseError) as exc:
        typer.echo(f"error: cannot read input: {exc}", err=True)
        raise typer.Exit(2) from None
    receipt = receipt_from_proto(message)
    if receipt.verify(key):
        typer.echo(f"VALID receipt {receipt.receipt_id}: {receipt.outcome.value} for message {receipt.message_id} from {receipt.sender}")
        return
    typer.echo(f"INVALID: receipt {receipt.receipt_id} does not match customs' signature", err=True)
    raise typer.Exit(1)
