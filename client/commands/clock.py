"""`ecert clock`: read, set or advance the clock of a service started with --simulated-clock."""
from __future__ import annotations

import datetime as dt
import pathlib
import re
from typing import Optional

import typer

from client.commands import common
from client.sdk import OperatorClient

app = typer.Typer(help="The simulated clock of a test service (ecert serve --simulated-clock).", no_args_is_help=True)
_DURATION = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str) -> dt.timedelta:
    """"3h", "1d12h", "90s"; one or more number-unit pairs (d, h, m, s)."""
    if not text or _DURATION.sub("", text) != "":
        raise common.BadInput(f"{text!r}: a duration like 3h, 1d12h, 45m or 90s")
    return sum((dt.timedelta(**{_UNITS[unit]: int(number)}) for number, unit in _DURATION.findall(text)), dt.timedelta(0))




def _client(target: Optional[str], insecure: bool, tls_dir: Optional[pathlib.Path]) -> OperatorClient:
    return OperatorClient(common.settings(target, insecure, tls_dir, None))


@app.command()
@common.handle_errors
def get(target: Optional[str] = common.TARGET, insecure: bool = common.INSECURE, tls_dir: Optional[pathlib.Path] = common.TLS_DIR) -> None:
    """Print the service's current instant."""
    with _client(target, insecure, tls_dir) as client:
        typer.echo(client.clock_now().isoformat())


@app.command("set")
@common.handle_errors
def set_(
    instant: str = typer.Argument(..., help="an ISO 8601 instant, not before the clock's current one"),
    target: Optional[str] = common.TARGET, insecure: bool = common.INSECURE, tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
) -> None:
    """Move the clock to INSTANT; it runs on from there."""
    at = common.instant(instant, "INSTANT")
    with _client(target, insecure, tls_dir) as client:
        typer.echo(client.set_clock(at).isoformat())


@app.command()
@common.handle_errors
def advance(
    by: str = typer.Argument(..., help="a duration: 3h, 1d12h, 45m, 90s"),
    target: Optional[str] = common.TARGET, insecure: bool = common.INSECURE, tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
) -> None:
    """Move the clock forward by BY."""
    duration = parse_duration(by)
    with _client(target, insecure, tls_dir) as client:
        typer.echo(client.advance_clock(duration).isoformat())
