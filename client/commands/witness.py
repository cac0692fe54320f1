"""`ecert witness`: a witness of customs' transparency log, run by a party other than customs.

    ecert witness keygen --name relay.example/witness [--data-dir DIR]
    ecert witness run --server HOST:PORT --log-key VKEY --tls-dir DIR [--interval 1] [--once]
    ecert witness checkpoint [--data-dir DIR]     the last checkpoint note cosigned, for audit verify

`run` polls the latest checkpoint (ecert.v1.LogService/GetCheckpoint), fetches the consistency proof
from the size it last cosigned (GetConsistencyProof), checks both (client/witness_rules.py), records
the new checkpoint in its state file, and hands the cosigned note back (AddCosignature). Its log is
JSON lines on stderr (ECERT_LOG_FORMAT=text for plain text); with --once it also prints one JSON line
on stdout: {"action": "cosigned" | "resent" | "idle", "size", "root_hash", "cosignatures"}.

Exit status, besides those every command shares (common.py):
  5  ALARM: the log signed a checkpoint that contradicts the one this witness cosigned: a smaller tree
     (rollback), another root for the same size (fork), or a larger tree its proof does not connect
     to the cosigned one. One ERROR line says so; the evidence is kept under DIR/alarms/; the state
     is left as it was, so the alarm repeats until someone looks.
  1  a checkpoint refused without evidence against the log (not signed by the log's key, not a
     checkpoint, another log's origin), or the service refused a call (e.g. the role may not cosign).
  2  the data folder, its key or state file, or a flag is unusable (nothing cosigned).
  3  the service could not be reached (with --once; otherwise the witness keeps polling).
"""
from __future__ import annotations

import logging
import os
import pathlib
import signal
import threading
from typing import Optional

import typer

from client.commands.common import EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_UNREACHABLE, INSECURE, TIMEOUT, TLS_DIR, BadInput
from contract.note import NoteError, NoteVerifier

EXIT_ALARM = 5

app = typer.Typer(help="A witness of customs' transparency log: cosigns checkpoints that extend the last one it saw.",
                  no_args_is_help=True)

DATA_DIR = typer.Option(pathlib.Path("witness-data"), "--data-dir", envvar="ECERT_WITNESS_DIR",
                        help="the witness's folder: key, verifier key, state file, alarms")
log = logging.getLogger("ecert.witness")


@app.command()
def keygen(
    name: str = typer.Option(..., "--name", help="the witness's name, e.g. relay.example/witness (no spaces or '+')"),
    data_dir: pathlib.Path = DATA_DIR,
) -> None:
    """Make the witness's Ed25519 key in DIR and print its verifier key (give it to whoever checks cosignatures)."""
    from client.witness import VKEY_FILE, WitnessSetupError
    from client.witness import keygen as make_key

    try:
        verifier = make_key(data_dir, name)
    except (WitnessSetupError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    typer.echo(verifier.text())
    typer.echo(f"witness key in {data_dir}; its verifier key also in {data_dir / VKEY_FILE}", err=True)


@app.command()
def checkpoint(data_dir: pathlib.Path = DATA_DIR) -> None:
    """Print the last checkpoint note this witness cosigned (for `ecert audit verify --checkpoint FILE`)."""
    import json

    from client.witness import STATE_FILE

    try:
        document = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        typer.echo(f"error: no usable state in {data_dir}: {error}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    note = document.get("note") if isinstance(document, dict) else None
    if not isinstance(note, str):
        typer.echo(f"error: the witness of {data_dir} has cosigned nothing yet", err=True)
        raise typer.Exit(EXIT_REFUSED)
    typer.echo(note, nl=False)


def _log_keys(text: str) -> list[NoteVerifier]:
    """--log-key: a verifier key, or a file holding one per line."""

    path = pathlib.Path(text)
    lines = path.read_text(encoding="utf-8").split() if "+" not in text and path.is_file() else [text]
    try:
        return [NoteVerifier.parse(line.strip()) for line in lines if line.strip()]
    except NoteError as error:
        raise BadInput(f"--log-key: {error} (expected the log's name+key id+base64 key, as GetCheckpoint's "
                       "log_verifier_key gives it)") from None


@app.command()
def run(
    server: Optional[str] = typer.Option(None, "--server", "--target", "-t", envvar="ECERT_TARGET",
                                         help="the service's LogService, host:port"),
    log_key: str = typer.Option(..., "--log-key", envvar="ECERT_WITNESS_LOG_KEY",
                                help="the log's verifier key (name+id+key), or a file holding it"),
    origin: Optional[str] = typer.Option(None, "--origin", help="the log's origin line (default: learned from the first checkpoint)"),
    interval: float = typer.Option(1.0, "--interval", min=0.05, help="seconds between polls"),
    once: bool = typer.Option(False, "--once", help="poll once, print what was done, exit"),
    data_dir: pathlib.Path = DATA_DIR,
    insecure: bool = INSECURE,
    tls_dir: Optional[pathlib.Path] = TLS_DIR,
    timeout: Optional[float] = TIMEOUT,
) -> None:
    """Follow the log: verify each new checkpoint against the last one cosigned, cosign it, hand it back."""
    import base64

    from client.commands.common import print_json_line, settings
    from client.sdk.channel import open_channel
    from client.sdk.errors import DeadlineExceeded, EcertError, Unavailable
    from client.witness import STATE_FILE, GrpcLog, StateFile, WitnessRunner, WitnessSetupError, load_key, locked
    from client.witness_rules import Witness, WitnessRefused
    from service_kit import logs

    logs.configure(os.environ.get("ECERT_LOG_LEVEL", "INFO").upper(), json_format=os.environ.get("ECERT_LOG_FORMAT", "json") != "text")
    try:
        keys = _log_keys(log_key)
        connection = settings(server, insecure, tls_dir, timeout)
        with locked(data_dir):
            key = load_key(data_dir)
            state = StateFile(data_dir / STATE_FILE).load(keys, key.verifier)
            follows = origin or (state.checkpoint.origin if state else None)
            if origin and state and state.checkpoint.origin != origin:
                raise WitnessSetupError(f"--origin {origin!r}, but this witness has cosigned {state.checkpoint.origin!r}")
            witness = Witness(key, keys, follows)
            runner = WitnessRunner(witness, data_dir, GrpcLog(open_channel(connection), connection.timeout_s), state)
            log.info("witness %s following %s at %s (cosigned up to %d entries)", key.name, follows or "the log",
                     connection.target, state.size if state else 0,
                     extra={"witness": key.verifier.text(), "cosigned_size": state.size if state else 0})
            stop = threading.Event()
            if not once:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, lambda *_: stop.set())
            while not stop.is_set():
                try:
                    step = runner.step()
                except (Unavailable, DeadlineExceeded) as error:
                    if once:
                        typer.echo(f"error: {error}", err=True)
                        raise typer.Exit(EXIT_UNREACHABLE) from None
                    log.warning("log unreachable, retrying: %s", error)
                else:
                    if step.action != "idle":
                        log.info("%s checkpoint of %d entries", step.action, step.size, extra={
                            "action": step.action, "size": step.size, "root_hash": base64.b64encode(step.root_hash).decode(),
                            "cosignatures": step.cosignatures})
                    if once:
                        print_json_line({"action": step.action, "size": step.size,
                                         "root_hash": base64.b64encode(step.root_hash).decode(), "cosignatures": step.cosignatures})
                        return
                stop.wait(interval)
    except WitnessRefused as refused:
        if not refused.refusal.alarm:  # an alarm has been logged at ERROR by the runner, with its evidence
            log.error("refused a checkpoint (%s): %s", refused.refusal.value, refused.message, extra={"refusal": refused.refusal.value})
        raise typer.Exit(EXIT_ALARM if refused.refusal.alarm else EXIT_REFUSED) from None
    except EcertError as error:
        log.error("the service refused: %s", error, extra={"code": error.code.name, "reason": error.reason})
        raise typer.Exit(EXIT_UNREACHABLE if isinstance(error, (Unavailable, DeadlineExceeded)) else EXIT_REFUSED) from None
    except (WitnessSetupError, BadInput, OSError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
