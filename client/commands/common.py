"""What every client command shares: connection options, JSON or table output, error reporting.

Exit status (README, "Command line"): 0 done, 1 the service refused or a check failed (its reason
and field violations are printed), 2 the command's own input or configuration was unusable (a file,
a flag, a variable, missing TLS material, no database where one was expected), 3 the service or the
database could not be reached, 4 an unexpected error (one line; ECERT_TRACEBACK=1 shows the
traceback).
"""
from __future__ import annotations

import datetime as dt

import functools
import json
import pathlib
import sys
from collections.abc import Callable
from typing import Any, Optional, TypeVar

import typer
from rich.console import Console

from client.sdk import ConnectionSettings, EcertError, to_plain
from client.sdk.errors import DeadlineExceeded, Unavailable

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_REFUSED, EXIT_BAD_INPUT, EXIT_UNREACHABLE, EXIT_UNEXPECTED = 1, 2, 3, 4

# Shared option declarations (typer reads them as defaults of each command's parameters).
TARGET = typer.Option(None, "--target", "-t", help="service address host:port (ECERT_TARGET, default 127.0.0.1:50051)")
INSECURE = typer.Option(False, "--insecure", help="plaintext gRPC (local development); otherwise mutual TLS")
TLS_DIR = typer.Option(None, "--tls-dir", help="folder with ca.pem, cert.pem, key.pem (ECERT_CLIENT_TLS_DIR)")
TIMEOUT = typer.Option(None, "--timeout", help="deadline of each call in seconds (ECERT_TIMEOUT, default 10)")
JSON = typer.Option(False, "--json", help="print JSON for scripts instead of a table")


class BadInput(Exception):
    """The command's own input (a file, a flag) is unusable: exit 2 with this message."""


def settings(target: Optional[str], insecure: bool, tls_dir: Optional[pathlib.Path], timeout: Optional[float]) -> ConnectionSettings:
    """The connection; without TLS material and without --insecure the command stops here (exit 2):
    the service requires a client certificate, so a handshake without one could only fail."""
    connection = ConnectionSettings.from_env(target=target, insecure=insecure or None, tls_dir=tls_dir, timeout_s=timeout)
    if not connection.insecure and connection.tls_dir is None and connection.cert_file is None:
        raise BadInput("no TLS material: give --tls-dir DIR (ca.pem, cert.pem, key.pem, as `ecert pki init` makes them; "
                       "or ECERT_CLIENT_TLS_DIR), or --insecure for a plaintext development service")
    return connection


def instant(text: str, what: str = "--as-of") -> dt.datetime:
    """An ISO 8601 instant from the command line (UTC when it names no zone); BadInput otherwise."""
    try:
        at = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{what} {text!r}: expected an ISO 8601 instant, e.g. 2026-03-01T12:00:00Z") from None
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def print_json(value: Any) -> None:
    """One JSON document on stdout (dataclasses, Decimals and instants made plain)."""
    sys.stdout.write(json.dumps(to_plain(value), indent=2, ensure_ascii=False) + "\n")


def print_json_line(value: Any) -> None:
    sys.stdout.write(json.dumps(to_plain(value), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def describe_error(error: EcertError) -> list[str]:
    lines = [f"error: {error.code.name}" + (f" {error.reason}" if error.reason else "") + f": {error.message}"]
    lines += [f"  {v.field}: {v.reason or v.description}" + (f" ({v.description})" if v.reason and v.description else "")
              for v in error.field_violations]
    lines += [f"  {k} = {v}" for k, v in sorted(error.metadata.items())]
    if error.receipt is not None:
        lines.append(f"  rejection receipt {error.receipt.receipt_id}")
    if error.request_id:
        lines.append(f"  request id {error.request_id} (the service's log names it)")
    return lines


def report_error(error: EcertError) -> int:
    for line in describe_error(error):
        err.print(line, markup=False)
    return EXIT_UNREACHABLE if isinstance(error, (Unavailable, DeadlineExceeded)) else EXIT_REFUSED


F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(command: F) -> F:
    """Errors become a message and an exit status, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except EcertError as error:
            raise typer.Exit(report_error(error)) from None
        except (BadInput, OSError, ValueError, KeyError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            err.print(f"error: {message}", markup=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the command's signature for typer


def load_json(path: pathlib.Path) -> Any:
    """A JSON file, or standard input for '-'."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInput(f"{path}: not valid JSON ({error})") from None


def parse_choice(enum_cls: Any, text: str, what: str) -> Any:
    try:
        member = enum_cls.parse(text)
    except KeyError:
        member = None
    if member is None or member.name == "UNSPECIFIED":
        names = ", ".join(m.name.lower() for m in enum_cls if m.name != "UNSPECIFIED")
        raise BadInput(f"unknown {what} {text!r}: one of {names}")
    return member


def fmt(value: Any) -> str:
    """A cell: enums by name, None as empty, everything else as text."""
    if value is None:
        return ""
    if hasattr(value, "name") and hasattr(value, "value") and not isinstance(value, (str, int)):
        return str(value.name)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)
