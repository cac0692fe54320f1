"""`ecert log`: customs' transparency log, as anyone outside customs checks it.

    ecert log checkpoint            the latest signed checkpoint (a note), and the log's verifier key
    ecert log proof                 an entry's inclusion proof (by receipt, leaf hash or index), saved as JSON
    ecert log verify                OFFLINE: a receipt (or entry) is in the tree a signed checkpoint commits to
    ecert log verify-consistency    a later checkpoint extends an earlier one (no history rewritten)

`verify` and `verify-consistency --proof` use nothing but RFC 6962 hashing (contract/merkle.py),
the C2SP signed-note format (contract/note.py) and the entry format (contract/log_entry.py):
the files and the log's verifier key, published by customs, suffice.
"""
from __future__ import annotations

import base64
import json
import pathlib
from typing import Any, Optional

import typer

from client.commands import common

app = typer.Typer(help="Customs' transparency log: checkpoints, proofs, offline verification.", no_args_is_help=True)

LOG_KEY = typer.Option(..., "--log-key", help="the log's verifier key (name+hash+key, as customs publishes it) or a file holding it")


def _refused(message: str) -> typer.Exit:
    """A failed check: the reason on stderr, exit status 1."""
    common.err.print(f"FAILED: {message}", markup=False)
    return typer.Exit(common.EXIT_REFUSED)


def _verifier(text: str):  # type: ignore[no-untyped-def]  # returns a NoteVerifier, imported lazily inside
    from contract.note import NoteError, NoteVerifier

    path = pathlib.Path(text)
    value = path.read_text(encoding="utf-8").strip() if path.is_file() else text.strip()
    try:
        return NoteVerifier.parse(value)
    except NoteError as exc:
        raise common.BadInput(f"--log-key: not a note verifier key ({exc})") from None


def _checkpoint(note: str, verifier, what: str):  # type: ignore[no-untyped-def]  # returns a Checkpoint; `verifier` is a NoteVerifier
    """The checkpoint a note signed by the log key carries; BadInput names what is wrong."""
    from contract.note import Checkpoint, NoteError, open_note

    try:
        return Checkpoint.parse(open_note(note, [verifier]).text)
    except NoteError as exc:
        raise _refused(f"{what}: not a checkpoint signed by the log key ({exc})")


def _leaf_from(receipt: Optional[pathlib.Path], entry: Optional[pathlib.Path], leaf_hash: str) -> tuple[bytes, str]:
    """(leaf hash, what it is) from a receipt file, an entry file or a hex leaf hash."""
    from contract import merkle

    given = [x for x in (receipt, entry, leaf_hash or None) if x]
    if len(given) != 1:
        raise common.BadInput("give exactly one of --receipt, --entry, --leaf-hash")
    if receipt is not None:
        from google.protobuf import json_format

        from client.commands.receipt import _receipts
        from contract.log_entry import receipt_entry
        from contract.messages import receipt_from_proto
        from ecert.v1 import transmission_pb2 as tpb

        found = [data for _, data in _receipts(common.load_json(receipt)) if data is not None]
        if len(found) != 1:
            raise common.BadInput(f"{receipt}: expected one receipt, found {len(found)}")
        try:
            made = receipt_from_proto(json_format.ParseDict(found[0], tpb.Receipt()))
        except json_format.ParseError as exc:
            raise common.BadInput(f"{receipt}: not a receipt ({exc})") from None
        return receipt_entry(made).leaf_hash, f"receipt {made.receipt_id}"
    if entry is not None:
        return merkle.leaf_hash(entry.read_bytes()), f"entry {entry}"
    try:
        value = bytes.fromhex(leaf_hash)
    except ValueError:
        raise common.BadInput("--leaf-hash: hexadecimal SHA-256") from None
    if len(value) != merkle.HASH_SIZE:
        raise common.BadInput("--leaf-hash: 32 bytes (64 hex digits)")
    return value, f"leaf {leaf_hash}"


def _write(path: Optional[pathlib.Path], text: str) -> None:
    if path is None:
        typer.echo(text, nl=False)
    else:
        path.write_text(text, encoding="utf-8")


@app.command()
@common.handle_errors
def checkpoint(
    size: int = typer.Option(0, "--size", help="the checkpoint signed for exactly this tree size (default the latest)"),
    out: Optional[pathlib.Path] = typer.Option(None, "--out", help="write the signed note here (default: print it)"),
    key_out: Optional[pathlib.Path] = typer.Option(None, "--key-out", help="write the log's verifier key, as the service states it, here"),
    as_json: bool = common.JSON,
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """The latest checkpoint (or one of a given size): the signed note with every stored cosignature."""
    from client.sdk import LogClient

    with LogClient(common.settings(target, insecure, tls_dir, timeout)) as client:
        found = client.log_checkpoint(size)
    if key_out is not None:
        key_out.write_text(found.log_verifier_key + "\n", encoding="utf-8")
    if as_json:
        common.print_json({"tree_size": found.tree_size, "root_hash": found.root_hash.hex(), "signed_at": found.signed_at,
                           "log_verifier_key": found.log_verifier_key, "note": found.note})
        if out is not None:
            out.write_text(found.note, encoding="utf-8")
        return
    _write(out, found.note)
    if out is not None:
        typer.echo(f"checkpoint of tree size {found.tree_size} written to {out}")


@app.command()
@common.handle_errors
def proof(
    receipt: Optional[pathlib.Path] = typer.Option(None, "--receipt", help="a receipt (protobuf JSON, or `ecert submit --json` output of one row)"),
    entry: Optional[pathlib.Path] = typer.Option(None, "--entry", help="a file holding an entry's bytes"),
    leaf_hash: str = typer.Option("", "--leaf-hash", help="an entry's leaf hash (hex), as a receipt or claim answer carries it"),
    index: int = typer.Option(-1, "--index", help="an entry's index in the log"),
    size: int = typer.Option(0, "--size", help="prove it in the tree of this size (default the latest checkpoint's)"),
    out: Optional[pathlib.Path] = typer.Option(None, "--out", help="write the proof (JSON) here (default: print it)"),
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """Fetch an entry's inclusion proof with the checkpoint it is checked against, as one JSON file for
    `ecert log verify`."""
    from client.sdk import LogClient

    with LogClient(common.settings(target, insecure, tls_dir, timeout)) as client:
        if index >= 0 and not (receipt or entry or leaf_hash):
            found = client.inclusion_proof(leaf_index=index, tree_size=size)
            leaf = b""
        else:
            leaf, _ = _leaf_from(receipt, entry, leaf_hash)
            found = client.inclusion_proof(leaf_hash=leaf, tree_size=size)
    document: dict[str, Any] = {
        "leaf_index": found.leaf_index, "tree_size": found.tree_size,
        "hashes": [base64.b64encode(h).decode() for h in found.hashes], "checkpoint": found.checkpoint_note,
    }
    if leaf:
        document["leaf_hash"] = leaf.hex()
    _write(out, json.dumps(document, indent=2) + "\n")
    if out is not None:
        typer.echo(f"inclusion proof of entry {found.leaf_index} in the tree of size {found.tree_size} written to {out}")


@app.command()
@common.handle_errors
def verify(
    proof_file: pathlib.Path = typer.Option(..., "--proof", help="the proof, as `ecert log proof` writes it"),
    log_key: str = LOG_KEY,
    receipt: Optional[pathlib.Path] = typer.Option(None, "--receipt", help="the receipt whose entry is proved (its entry is rebuilt from it)"),
    entry: Optional[pathlib.Path] = typer.Option(None, "--entry", help="a file holding the entry's bytes"),
    leaf_hash: str = typer.Option("", "--leaf-hash", help="the entry's leaf hash (hex)"),
    checkpoint_file: Optional[pathlib.Path] = typer.Option(None, "--checkpoint", help="check against this checkpoint note instead of the proof's (it must be of the same tree size)"),
) -> None:
    """OFFLINE: exit 0 if the entry is in the tree that the checkpoint, signed by the log key, commits to;
    1 if not; 2 for unusable input. Nothing is asked of the service."""
    from contract import merkle

    verifier = _verifier(log_key)
    leaf, what = _leaf_from(receipt, entry, leaf_hash)
    document = common.load_json(proof_file)
    try:
        index, size = int(document["leaf_index"]), int(document["tree_size"])
        hashes = [base64.b64decode(h, validate=True) for h in document["hashes"]]
        note = checkpoint_file.read_text(encoding="utf-8") if checkpoint_file else str(document["checkpoint"])
    except (KeyError, TypeError, ValueError) as exc:
        raise common.BadInput(f"{proof_file}: not an inclusion proof ({exc})") from None
    signed = _checkpoint(note, verifier, "the checkpoint")
    if signed.size != size:
        raise _refused(f"the proof is for a tree of {size} entries, the checkpoint signs {signed.size}")
    if document.get("leaf_hash") and document["leaf_hash"] != leaf.hex():
        raise _refused(f"the proof is for leaf {document['leaf_hash']}, not {what} ({leaf.hex()})")
    if not merkle.verify_inclusion(index, size, leaf, hashes, signed.root_hash):
        raise _refused(f"{what} is NOT in the tree of size {size} that the checkpoint signs")
    typer.echo(f"VERIFIED: {what} is entry {index} of {signed.origin}, in the tree of size {size} signed by {verifier.name}")


@app.command("verify-consistency")
@common.handle_errors
def verify_consistency(
    old: pathlib.Path = typer.Argument(..., help="the earlier checkpoint note (one you kept, or a witness cosigned)"),
    new: pathlib.Path = typer.Argument(..., help="the later checkpoint note"),
    log_key: str = LOG_KEY,
    proof_file: Optional[pathlib.Path] = typer.Option(None, "--proof", help="a consistency proof (JSON: first_size, second_size, hashes); without it, asked of the service"),
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """Exit 0 if the later checkpoint's tree extends the earlier one's (the log only grew); 1 if not
    (a fork or a rollback: history was rewritten)."""
    from contract import merkle

    verifier = _verifier(log_key)
    first = _checkpoint(old.read_text(encoding="utf-8"), verifier, str(old))
    second = _checkpoint(new.read_text(encoding="utf-8"), verifier, str(new))
    if first.size > second.size:
        raise _refused(f"{new} has {second.size} entries, fewer than {old} ({first.size}): a rollback")
    if first.size == 0:
        typer.echo("VERIFIED: the earlier checkpoint is of the empty tree, which every tree extends")
        return
    if proof_file is not None:
        document = common.load_json(proof_file)
        try:
            sizes = (int(document["first_size"]), int(document["second_size"]))
            hashes = [base64.b64decode(h, validate=True) for h in document["hashes"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise common.BadInput(f"{proof_file}: not a consistency proof ({exc})") from None
        if sizes != (first.size, second.size):
            raise common.BadInput(f"{proof_file}: a proof from {sizes[0]} to {sizes[1]}, not {first.size} to {second.size}")
    elif first.size == second.size:
        hashes = []
    else:
        from client.sdk import LogClient

        with LogClient(common.settings(target, insecure, tls_dir, timeout)) as client:
            hashes = client.consistency_proof(first.size, second.size).hashes
    if not merkle.verify_consistency(first.size, second.size, first.root_hash, second.root_hash, hashes):
        raise _refused(f"NOT consistent: the tree of {second.size} entries does not extend the tree of {first.size}")
    typer.echo(f"VERIFIED: the tree of {second.size} entries extends the tree of {first.size} ({first.origin})")
