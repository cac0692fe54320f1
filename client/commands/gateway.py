"""`ecert gateway SCENARIO`: the simulated Mexican gateway sends certificates through the relay."""
from __future__ import annotations

import json
import logging
import pathlib
import time
from dataclasses import asdict, dataclass
from typing import Optional

import typer

app = typer.Typer(help="Simulated Mexico gateway: issue, amend, cancel certificates through the relay.", no_args_is_help=True)


@dataclass
class Options:
    relay: str
    tls_dir: Optional[pathlib.Path]
    insecure: bool
    register: pathlib.Path
    signing_key: Optional[pathlib.Path]
    key_id: Optional[str]
    customs_key: Optional[pathlib.Path]
    seed: Optional[int]
    resend_after: float
    wait: float
    as_json: bool


@app.callback()
def common(
    ctx: typer.Context,
    relay: str = typer.Option("127.0.0.1:50052", envvar="ECERT_GATEWAY_RELAY", help="the relay's address"),
    tls_dir: Optional[pathlib.Path] = typer.Option(None, envvar="ECERT_GATEWAY_TLS_DIR", help="the gateway's ca.pem, cert.pem, key.pem"),
    insecure: bool = typer.Option(False, "--insecure", help="plaintext to the relay (development)"),
    register: pathlib.Path = typer.Option(pathlib.Path("gateway-data/register.db"), envvar="ECERT_GATEWAY_REGISTER", help="the gateway's register (SQLite)"),
    signing_key: Optional[pathlib.Path] = typer.Option(None, help="Ed25519 document-signing key (default <tls dir>/document-signing.pem)"),
    key_id: Optional[str] = typer.Option(None, help="its registered id (default from <tls dir>/document-signing.key-id)"),
    customs_key: Optional[pathlib.Path] = typer.Option(None, help="customs' receipt-signing public key, to verify receipts (without it they are reported unverified)"),
    seed: Optional[int] = typer.Option(None, help="seed of the certificate generator"),
    resend_after: float = typer.Option(5.0, help="seconds without a receipt before re-sending"),
    wait: float = typer.Option(30.0, help="seconds to wait for receipts at the end"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    ctx.obj = Options(relay, tls_dir, insecure, register, signing_key, key_id, customs_key, seed, resend_after, wait, as_json)


def _gateway(options: Options):  # type: ignore[no-untyped-def]  # returns a Gateway, imported lazily inside
    import grpc

    from client.tls import secure_channel
    from contract.keys import load_public_key, load_signer
    from gateway_sim.gateway.gateway import Gateway
    from gateway_sim.gateway.register import Register

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not options.insecure and options.tls_dir is None:
        typer.echo("error: give --tls-dir (see `ecert pki init`) or --insecure", err=True)
        raise typer.Exit(2)
    key_path = options.signing_key or (options.tls_dir / "document-signing.pem" if options.tls_dir else None)
    if key_path is None or not key_path.exists():
        typer.echo("error: no document-signing key (--signing-key)", err=True)
        raise typer.Exit(2)
    key_id = options.key_id or key_path.with_suffix(".key-id").read_text().strip()
    channel = grpc.insecure_channel(options.relay) if options.insecure else secure_channel(options.relay, options.tls_dir)  # type: ignore[arg-type]  # checked above
    customs = load_public_key(options.customs_key.read_bytes()) if options.customs_key else None
    if customs is None:
        typer.echo("warning: no --customs-key: receipts' signatures are not checked (counted as unverified_receipts)", err=True)
    return Gateway(
        Register(options.register), load_signer(key_path, key_id), channel,
        seed=options.seed, resend_after=options.resend_after, customs_key=customs,
    )


def _finish(options: Options, gateway, started: float) -> None:  # type: ignore[no-untyped-def]  # `gateway` is a Gateway, imported lazily
    settled = gateway.settle(options.wait)
    summary = {
        "settled": settled,
        "seconds": round(time.monotonic() - started, 2),
        "register": gateway.register.counts(),
        # Without customs' key only the digest is checked: bad_receipts=0 then says nothing about signatures.
        "receipt_signatures": "verified" if gateway.customs_key is not None else "unverified",
        **asdict(gateway.tally),
    }
    if options.as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
    else:
        typer.echo(" ".join(f"{k}={v}" for k, v in summary.items()))
    if not settled:
        raise typer.Exit(1)


@app.command()
def burst(ctx: typer.Context, count: int = typer.Option(50, min=1, help="certificates to issue at once")) -> None:
    """Issue COUNT new certificates as fast as the relay takes them."""
    options: Options = ctx.obj
    gateway, started = _gateway(options), time.monotonic()
    gateway.issue(count)
    _finish(options, gateway, started)


@app.command()
def steady(
    ctx: typer.Context,
    rate: float = typer.Option(5.0, min=0.01, help="certificates per second"),
    duration: float = typer.Option(10.0, min=0.0, help="seconds to keep issuing"),
) -> None:
    """Issue new certificates at a steady rate, collecting receipts and re-sending as it goes."""
    options: Options = ctx.obj
    gateway, started = _gateway(options), time.monotonic()
    interval, issued = 1.0 / rate, 0
    while time.monotonic() - started < duration:
        gateway.issue(1)
        issued += 1
        if issued % max(1, int(rate)) == 0:  # about once a second
            try:
                gateway.collect()
            except Exception:  # the relay may be down: receipts wait, issuing goes on
                pass
            gateway.resend_overdue()
        time.sleep(max(0.0, started + issued * interval - time.monotonic()))
    _finish(options, gateway, started)


@app.command()
def amend(ctx: typer.Context, count: int = typer.Option(10, min=1, help="certificates to replace")) -> None:
    """Replace up to COUNT receipted certificates with a corrected quantity (a new version each)."""
    options: Options = ctx.obj
    gateway, started = _gateway(options), time.monotonic()
    gateway.settle(options.wait)
    gateway.amend(count)
    _finish(options, gateway, started)


@app.command()
def cancel(ctx: typer.Context, count: int = typer.Option(5, min=1, help="certificates to cancel")) -> None:
    """Cancel up to COUNT receipted, unused certificates."""
    options: Options = ctx.obj
    gateway, started = _gateway(options), time.monotonic()
    gateway.settle(options.wait)
    gateway.cancel(count)
    _finish(options, gateway, started)


@app.command()
def status(ctx: typer.Context) -> None:
    """Collect what receipts are waiting and show the register."""
    options: Options = ctx.obj
    options.wait = 0.0
    gateway, started = _gateway(options), time.monotonic()
    _finish(options, gateway, started)
