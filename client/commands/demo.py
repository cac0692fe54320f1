"""`ecert demo`: run the whole flow (PKI, service, relay, gateway, faults, attacks) and summarise it."""
from __future__ import annotations

import pathlib
import shutil
import tempfile
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        directory: Optional[pathlib.Path] = typer.Option(None, "--dir", help="work folder (default: a temporary one, removed after)"),
        count: int = typer.Option(60, min=1, help="certificates the gateway issues"),
        seed: int = typer.Option(2026, help="seed of the generator and of the relay's faults"),
    ) -> None:
        """Issue certificates from a simulated Mexican gateway through a faulty relay to customs, with mutual TLS."""
        from rich.console import Console

        from client.demo_view import render
        from gateway_sim.demo import PartyDied, run_demo

        console = Console()
        work = directory or pathlib.Path(tempfile.mkdtemp(prefix="ecert-demo-"))
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            console.print(f"[red]error:[/] {work} is not empty")
            raise typer.Exit(2)
        try:
            report = run_demo(work, count=count, seed=seed, log=lambda text: console.print(text, style="dim"))
            render(console, report)
        except PartyDied as died:
            console.print(f"[red]error:[/] {died}", highlight=False, markup=False)
            raise typer.Exit(1) from None
        finally:
            if directory is None:
                shutil.rmtree(work, ignore_errors=True)
        if not report.ok:
            raise typer.Exit(1)
