"""The `ecert` command line. Each role's commands live in client/commands/; this file wires them.

Exit status (README, "Command line"): 0 done, 1 refused or a failed check, 2 unusable input or
configuration, 3 the service or the database could not be reached, 4 anything unexpected, 5 (only
`ecert witness run`) an alarm: the log signed a fork or a rollback of what the witness cosigned. Every
failure is reported in one line on stderr, never a traceback (ECERT_TRACEBACK=1 shows it for the
unexpected ones).
"""
from __future__ import annotations

import os
import sys

# gRPC's core library logs handshake failures, bind errors and the like on stderr in its own format, among
# a client's one-line errors and a server's JSON lines; each failure is reported here instead.
# GRPC_VERBOSITY=debug (or info, error) brings them back. Set before grpc is imported.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import typer  # noqa: E402

from client.commands import audit, certificate, db, health, log, pki, receipt, reference, serve, submit  # noqa: E402
from client.commands import demo, gateway, relay  # noqa: E402  (the simulated partner side)
from client.commands import claim, clock, quota, usage  # noqa: E402  (customs' claims, the quota view, a test clock)
from client.commands import witness  # noqa: E402  (a log witness, run by a party other than customs)
from client.commands.common import EXIT_UNEXPECTED  # noqa: E402

app = typer.Typer(help="eCERT certification service: serve, transmit, match, audit.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
serve.register(app)
relay.register(app)
health.register(app)
app.add_typer(db.app, name="db")
app.add_typer(receipt.app, name="receipt")
app.add_typer(pki.app, name="pki")
submit.register(app)
app.add_typer(certificate.app, name="certificate")
app.add_typer(claim.app, name="claim")
app.add_typer(quota.app, name="quota")
app.add_typer(usage.app, name="usage")
app.add_typer(clock.app, name="clock")
app.add_typer(gateway.app, name="gateway")
demo.register(app)
app.add_typer(audit.app, name="audit")
app.add_typer(log.app, name="log")
app.add_typer(reference.app, name="reference")
app.add_typer(witness.app, name="witness")


def _gateway_party() -> None:
    """`ecert gateway` logs and traces like the relay and the service, so that one request id (its
    trace id) finds a transmission's lines in all three. Set up here, before the command runs: its
    own logging.basicConfig then finds the root logger configured and leaves it be."""
    import logging

    from service_kit import logs, tracing

    logs.configure(os.environ.get("ECERT_LOG_LEVEL", "INFO").upper(), json_format=os.environ.get("ECERT_LOG_FORMAT", "json") != "text")
    try:
        tracing.configure("ecert-gateway")
    except ValueError as exc:
        logging.getLogger("ecert.gateway").error("tracing off: %s", exc)


def main() -> None:
    try:
        if sys.argv[1:2] == ["gateway"]:
            _gateway_party()
        app()
    except Exception as error:  # noqa: BLE001 - the last resort: one line, not a traceback
        if os.environ.get("ECERT_TRACEBACK") in ("1", "true", "yes"):
            raise
        message = " ".join(str(error).split()) or "no message"
        print(f"error: unexpected {type(error).__name__}: {message} (ECERT_TRACEBACK=1 shows where)", file=sys.stderr)
        raise SystemExit(EXIT_UNEXPECTED) from None


if __name__ == "__main__":
    main()
