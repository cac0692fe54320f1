"""`ecert demo`: run the whole flow (PKI, service, relay, gateway, faults, attacks) and summarise it;
`ecert demo --opening-day`: an opening day on a simulated clock (gateway_sim/opening_day.py)."""
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
        opening_day: bool = typer.Option(False, "--opening-day", help="instead: a 2027 TPL 1 opening on a simulated clock (refusals, "
                                         "the window, prorated offers, answers, a lapse, near fill); --count and --seed do not apply"),
    ) -> None:
        """Issue certificates from a simulated Mexican gateway through a faulty relay to customs, with mutual TLS.

        With --opening-day: a 2027 opening of TPL 1 on a service with a simulated clock, every step checked."""
        from rich.console import Console

        from gateway_sim.demo import PartyDied

        console = Console()
        work = directory or pathlib.Path(tempfile.mkdtemp(prefix="ecert-demo-"))
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            console.print(f"[red]error:[/] {work} is not empty")
            raise typer.Exit(2)
        progress = lambda text: console.print(text, style="dim")  # noqa: E731
        try:
            if opening_day:
                from client.opening_day_view import render_opening_day
                from gateway_sim.opening_day import run_opening_day

                report = run_opening_day(work, log=progress)
                render_opening_day(console, report)
            else:
                from client.demo_view import render
                from gateway_sim.demo import run_demo

                report = run_demo(work, count=count, seed=seed, log=progress)
                render(console, report)
        except PartyDied as died:
            console.print(f"[red]error:[/] {died}", highlight=False, markup=False)
            raise typer.Exit(1) from None
        finally:
            if directory is None:
                shutil.rmtree(work, ignore_errors=True)
        if not report.ok:
            raise typer.Exit(1)
