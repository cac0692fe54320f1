"""`ecert receipt verify`: check receipts offline against customs' public key.

It reads a receipt as protobuf JSON (what `--receipts-dir` saves and `Receipt.to_json()` returns), or
what `ecert submit --json` prints: the list of rows, or one row, each with its receipt. Rows without a
receipt (a refusal before customs judged anything) are named and skipped.
"""
from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import typer
from google.protobuf import json_format

app = typer.Typer(help="Customs receipts.", no_args_is_help=True)


def _receipts(document: Any) -> list[tuple[str, Any]]:
    """(label, receipt as a JSON object or None) for each receipt the document holds."""
    if isinstance(document, list):
        found = []
        for n, item in enumerate(document, 1):
            if not isinstance(item, dict) or "receipt" not in item:
                raise ValueError(f"item {n}: expected a row of `ecert submit --json` (with \"receipt\")")
            found.append((f"row {item.get('row', n)}", item["receipt"]))
        return found
    if isinstance(document, dict) and "receipt" in document:  # a receipt itself has no field of that name
        return [(f"row {document.get('row', 1)}", document["receipt"])]
    if isinstance(document, dict):
        return [("receipt", document)]
    raise ValueError("expected a receipt (JSON object) or the output of `ecert submit --json`")


@app.command()
def verify(
    receipt_file: pathlib.Path = typer.Argument(..., help="a receipt as protobuf JSON, or `ecert submit --json`'s output; '-' for stdin"),
    public_key: pathlib.Path = typer.Option(..., help="customs' receipt-signing public key (PEM)"),
) -> None:
    """Exit 0 if customs signed every receipt exactly as it reads; 1 otherwise."""
    from contract.keys import load_public_key
    from contract.messages import receipt_from_proto
    from ecert.v1 import transmission_pb2 as tpb

    try:
        text = sys.stdin.read() if str(receipt_file) == "-" else receipt_file.read_text(encoding="utf-8")
        found = _receipts(json.loads(text))
        messages = [(label, None if data is None else json_format.ParseDict(data, tpb.Receipt())) for label, data in found]
        key = load_public_key(public_key.read_bytes())
    except (OSError, ValueError, json_format.ParseError) as exc:
        typer.echo(f"error: cannot read input: {exc}", err=True)
        raise typer.Exit(2) from None
    checked = invalid = 0
    for label, message in messages:
        if message is None:
            typer.echo(f"{label}: no receipt (refused before customs judged it), not checked")
            continue
        receipt = receipt_from_proto(message)
        checked += 1
        if receipt.verify(key):
            typer.echo(f"VALID receipt {receipt.receipt_id}: {receipt.outcome.value} for message {receipt.message_id} from {receipt.sender}")
        else:
            invalid += 1
            typer.echo(f"INVALID: receipt {receipt.receipt_id} does not match customs' signature", err=True)
    if checked == 0:
        typer.echo("error: no receipt to check", err=True)
        raise typer.Exit(2)
    if invalid:
        raise typer.Exit(1)
