"""`ecert usage watch`: the utilization feed of the caller's certificates (ecert.v1.UsageService).

    ecert usage watch                     every use so far, in the order of customs' transparency log
    ecert usage watch --since CURSOR      only those after the event with this cursor
    ecert usage watch --follow            then each new use as customs records it (Ctrl-C stops)

Each line starts with the event's cursor (its log index); the last one is printed again on stderr as
the cursor to resume from. `ecert log proof --index N` proves an event's entry is in the log.
"""
from __future__ import annotations

import pathlib
from typing import Optional

import typer

from client.commands import common

app = typer.Typer(help="The utilization feed: every use of your certificates, with its log position.", no_args_is_help=True)


def event_line(event) -> str:  # type: ignore[no-untyped-def]  # `event` is a UsageEvent
    what = f"{event.decision} granted {event.granted_quantity} {event.unit}" if event.kind != "REVERSAL" else \
        f"returned {event.returned_quantity} {event.unit}"
    return (f"{event.cursor} {event.at.isoformat()} {event.kind} {event.issuing_country}/{event.certificate_number}"
            f"@{event.certificate_version} entry {event.entry_number}/{event.line_number}#{event.revision} {what.strip()} "
            f"leaf {event.leaf_hash.hex()}")


def event_json(event) -> dict[str, object]:  # type: ignore[no-untyped-def]  # `event` is a UsageEvent
    return {
        "cursor": event.cursor, "log_index": event.log_index, "leaf_hash": event.leaf_hash.hex(), "kind": event.kind,
        "at": event.at.isoformat(), "claim_id": event.claim_id, "entry_number": event.entry_number, "line_number": event.line_number,
        "revision": event.revision, "issuing_country": event.issuing_country, "certificate_number": event.certificate_number,
        "certificate_version": event.certificate_version, "decision": event.decision, "granted_quantity": event.granted_quantity,
        "returned_quantity": event.returned_quantity, "unit": event.unit, "tpl": event.tpl,
        "entry": event.entry.decode("utf-8"),
    }


@app.command()
@common.handle_errors
def watch(
    since: str = typer.Option("", "--since", help="resume after the event with this cursor (default: from the start)"),
    follow: bool = typer.Option(False, "--follow", help="after the history, keep printing new uses as they are recorded"),
    country: str = typer.Option("", "--country", help="customs and operators: only this issuing country's certificates"),
    max_events: int = typer.Option(0, "--max-events", help="stop after this many events (0: no limit)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line instead of text"),
    target: Optional[str] = common.TARGET,
    insecure: bool = common.INSECURE,
    tls_dir: Optional[pathlib.Path] = common.TLS_DIR,
    timeout: Optional[float] = common.TIMEOUT,
) -> None:
    """Every use of the caller's certificates after a cursor: charges, reversals, offers and their answers."""
    from client.sdk.usage import UsageFeed

    cursor = since
    with UsageFeed(common.settings(target, insecure, tls_dir, timeout)) as client:
        events = client.watch_usage(since, follow=follow, issuing_country=country)
        seen = 0
        try:
            for event in events:
                cursor = event.cursor
                seen += 1
                if as_json:
                    common.print_json_line(event_json(event))
                else:
                    common.out.print(event_line(event), markup=False, crop=False)
                    common.out.file.flush()
                if max_events and seen >= max_events:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            events.close()  # type: ignore[attr-defined]  # a generator typed as Iterator: close() ends the stream
    common.err.print(f"resume with: --since {cursor}" if cursor else "no events yet: start again without --since", markup=False)
