"""`ecert quota status`: each TPL level's fill as a table, once or live (`--watch`)."""
from __future__ import annotations

import pathlib
from typing import Optional

import typer
from rich.live import Live
from rich.table import Table

from client.commands import common
from client.sdk import OperatorClient, QuotaEvent, QuotaStatus

app = typer.Typer(help="TPL quota status.", no_args_is_help=True)
BAR_WIDTH = 20


def bar(share: float) -> str:
    filled = round(max(0.0, min(1.0, share)) * BAR_WIDTH)
    return "█" * filled + "░" * (BAR_WIDTH - filled)


def status_table(levels: list[QuotaStatus]) -> Table:
    table = Table("level", "Chapter 98", "year", "fill", "%", "charged", "limit", "remaining", "unit", "state")
    for q in sorted(levels, key=lambda s: (s.quota_year, s.tpl_number)):
        share = float(q.fill_share or 0)
        table.add_row(q.label, q.tpl_number, str(q.quota_year), bar(share), f"{share * 100:.2f}",
                      common.fmt(q.charged), common.fmt(q.limit), common.fmt(q.remaining), q.measure_unit,
                      common.fmt(q.state).lower())
    return table




@app.command()
@common.handle_errors
def status(
    year: int = typer.Option(0, "--year", help="quota year (default the current one)"),
    tpl: list[str] = typer.Option([], "--tpl", help="only these levels (Chapter 98 numbers); repeatable"),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="as the levels stood at this instant (ISO 8601)"),
    watch: bool = typer.Option(False, "--watch", help="keep the table live as claims charge the levels (Ctrl-C stops); without a terminal, one line per event"),
    max_events: int = typer.Option(0, "--max-events", min=0, help="with --watch: stop after this many events (0: never)"),
    as_json: bool = common.JSON,
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """Each level's limit, charged quantity, fill and state. With --watch: a live table on a terminal, one line
    per event elsewhere (a pipe, a file); with --json --watch: one JSON event per line."""
    if watch and as_of:
        raise common.BadInput("--watch shows changes from now on: it cannot be combined with --as-of")
    at = common.instant(as_of) if as_of else None
    with OperatorClient(common.settings(target, insecure, tls_dir, timeout)) as client:
        if watch:
            return _watch(client, tuple(tpl), year, max_events, as_json)
        if len(tpl) == 1:
            levels = [client.quota_status(tpl[0], year, as_of=at)]
        else:
            levels = [q for q in client.list_quotas(year, as_of=at) if not tpl or q.tpl_number in tpl]
    if as_json:
        return common.print_json(levels)
    common.out.print(status_table(levels))


def event_line(event: QuotaEvent) -> str:
    """One event as a line of text: what a live table shows, for a pipe or a log file."""
    q = event.status
    share = float(q.fill_share or 0)
    at = event.at.isoformat() if event.at else "-"
    return (f"{at} {common.fmt(event.kind).lower()} {q.label} ({q.tpl_number}, {q.quota_year}): charged "
            f"{common.fmt(q.charged)} of {common.fmt(q.limit)} {q.measure_unit} ({share * 100:.2f}%), "
            f"remaining {common.fmt(q.remaining)}, {common.fmt(q.state).lower()}")


def _watch(client: OperatorClient, tpls: tuple[str, ...], year: int, max_events: int, as_json: bool) -> None:
    levels: dict[tuple[str, int], QuotaStatus] = {}
    seen = 0
    events = client.watch_quotas(tpls, year)
    # A live table redraws itself in place, which only a terminal shows: elsewhere (a pipe, a file, a
    # service's log) each event is a line of text as it comes.
    lines = not as_json and not common.out.is_terminal
    try:
        with Live(status_table([]), console=common.out, auto_refresh=False, transient=False) if not (as_json or lines) else _Nothing() as live:
            for event in events:
                seen += 1
                if as_json:
                    common.print_json_line(event)
                elif lines:
                    common.out.print(event_line(event), markup=False, crop=False)
                    common.out.file.flush()
                else:
                    levels[(event.status.tpl_number, event.status.quota_year)] = event.status
                    live.update(status_table(list(levels.values())), refresh=True)
                if max_events and seen >= max_events:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        events.close()  # type: ignore[attr-defined]  # a generator typed as Iterator: close() ends the stream


class _Nothing:
    def __enter__(self) -> "_Nothing":
        return self

    def __exit__(self, *exc: object) -> None:
        return None
