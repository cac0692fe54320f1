"""The demo's summary as text tables (rich)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from gateway_sim.demo import DemoReport


def _quantity(value) -> str:  # type: ignore[no-untyped-def]  # `value` is any number the view formats
    return f"{value:,.0f}"


def _quantity_text(text: str) -> str:
    try:
        return f"{float(text):,.0f}"
    except ValueError:
        return text


def render(console: Console, report: DemoReport) -> None:
    register = report.register
    sent = sum(register.values())
    console.print()
    console.print(
        f"[bold]Certificates[/]  transmissions sent {sent}: receipted {register.get('RECEIPTED', 0)}, "
        f"rejected {register.get('REJECTED', 0)}, expired {register.get('EXPIRED', 0)}, still open "
        f"{register.get('NEW', 0) + register.get('RELAYED', 0)}"
    )
    if report.rejections:
        console.print("  rejected by customs: " + ", ".join(f"{reason} x{n}" for reason, n in sorted(report.rejections.items())))
    console.print("  gateway: " + ", ".join(f"{k} {v}" for k, v in report.gateway.items()))
    relay = report.relay
    faults = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(relay.items()) if k.startswith("fault."))
    console.print(
        f"  relay: accepted {relay.get('accepted', 0)}, duplicates dropped {relay.get('duplicates', 0)}, "
        f"forwarding attempts {relay.get('attempts', 0)}, delivered {relay.get('delivered', 0)}, "
        f"rejected {relay.get('rejected', 0)}; faults injected: {faults or 'none'}"
    )
    console.print(f"  customs' books: {report.transmissions_on_books} certificate versions, one per accepted transmission")
    witness = report.witness
    if witness:
        console.print(f"  transparency log: checkpoint of {witness['size']} entries signed by customs, cosigned by "
                      f"{witness['cosigned'] or 'no witness yet'}" + (f"; ALARM {witness['alarms']}" if witness["alarms"] else ""))

    table = Table(title="Certificates on file by TPL (latest versions)", title_justify="left")
    for column in ("TPL", "Chapter 98", "active", "canceled", "certified quantity"):
        table.add_column(column, justify="right" if column in ("active", "canceled", "certified quantity") else "left")
    for tpl, label, active, canceled, quantity, unit in report.books:
        table.add_row(label, tpl, str(active) if active else "", str(canceled) if canceled else "", f"{_quantity(quantity)} {unit}")
    console.print(table)

    if report.claims is not None:
        claims = Table(title="Claims filed by an internal customs client", title_justify="left")
        for column in ("entry line", "decision", "reasons"):
            claims.add_column(column)
        for what, decision, reasons in report.claims.lines:
            claims.add_row(what, decision, reasons)
        console.print(claims)
        console.print("  decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(report.claims.decisions.items())))
        quotas = Table(title="Quota fill", title_justify="left")
        for column in ("TPL", "limit", "charged", "fill", "state"):
            quotas.add_column(column, justify="left" if column in ("TPL", "state") else "right")
        for q in report.claims.quotas:
            share = f"{float(q.fill_share or 0) * 100:.2f}%" if q.fill_share else ""
            state = {1: "open", 2: "critical", 3: "filled", 4: "closed", 5: "on hold"}.get(q.state, "")
            quotas.add_row(q.label or q.tpl_number, f"{_quantity_text(q.limit)} {q.measure_unit}", _quantity_text(q.charged), share, state)
        console.print(quotas)

    attacks = Table(title="Attacks", title_justify="left")
    attacks.add_column("attempt")
    attacks.add_column("refused with")
    for what, outcome in report.attacks:
        attacks.add_row(what, outcome)
    console.print(attacks)
    verdict = "[green]OK[/]" if report.ok else "[red]INCOMPLETE[/]"
    console.print(f"{verdict} in {report.seconds:.1f} s")
