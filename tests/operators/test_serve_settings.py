"""`ecert serve`'s settings: a flag for every ECERT_* variable, the configuration file under the environment
under the flags, the log level and format, the start and shutdown lines, and the operator endpoint on
loopback unless told otherwise. Real `ecert serve` processes on real ports."""
from __future__ import annotations

import dataclasses
import json
import re
import socket

import pytest
import typer

from client.commands.serve import HELP as serve_help
from client.commands.serve import register as register_serve
from client.commands.serve import FLAG_ONLY
from client.sdk import Certificate, Party, PartnerClient, load_document_signer
from server.config import Settings
from tests.operators.conftest import ROOT, clean_env, ecert
from tests.tls_fixtures import pki  # noqa: F401 (fixture)

README = (ROOT / "README.md").read_text(encoding="utf-8")


def serve_flags() -> set[str]:
    # `ecert serve` on an app of its own: importing client.cli would set GRPC_VERBOSITY for this whole session.
    app = typer.Typer()
    register_serve(app)
    command = typer.main.get_command(app)
    return {opt for param in command.params for opt in param.opts}


def test_every_setting_has_its_flag_its_help_and_its_variable_in_the_readme():
    flags = serve_flags()  # made from the settings' fields, so a new setting has its flag at once ...
    section = README[README.index("## Configuration"):README.index("\n## ", README.index("## Configuration") + 5)]
    assert "--create-receipt-key" in flags  # the one setting decided by a development flag, not a variable
    for setting in dataclasses.fields(Settings):
        if setting.name in FLAG_ONLY:
            continue
        assert f"--{setting.name.replace('_', '-')}" in flags, setting.name
        assert setting.name in serve_help, f"say what {setting.name} is in client/commands/serve.py's HELP"  # ... and this
        assert f"`ECERT_{setting.name.upper()}`" in section, f"ECERT_{setting.name.upper()} in the README's table"
    # ... and every variable the README's table names is a setting (or the file naming them).
    named = set(re.findall(r"`ECERT_([A-Z_]+)`", section.split("| variable |", 1)[1].split("\n\n", 1)[0]))
    assert named - {f.name.upper() for f in dataclasses.fields(Settings)} == {"CONFIG"}


def json_lines(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def certificate() -> Certificate:
    return Certificate(
        certificate_number="MX26-00007001", issuing_country="MX", tpl_number="9823.53.01", htsus_number="6109.10.0012",
        goods_description="Men's knit cotton T-shirts", quantity="100", unit="DOZ", importer_of_record="12-345678900",
        quota_year=2026, issue_date="2026-02-20", last_valid_date="2026-12-31",
        exporter=Party("Textiles del Norte SA de CV", "Monterrey, NL", "TNO010101AAA"),
        producer=Party("Confecciones Bajío SA de CV", "León, Gto.", "CBA020202BBB"), invoice_number="INV-7001",
    )


def test_the_trust_store_receipt_key_and_workers_flags_reach_the_service(tmp_path, serve, pki):  # noqa: F811
    receipt_key = tmp_path / "elsewhere" / "receipts.pem"
    serving = serve("--port", "0", "--data-dir", str(tmp_path / "data"), "--tls-dir", str(pki.dir("service")),
                    "--trust-store", str(pki.layout.trust_store), "--receipt-key", str(receipt_key),
                    "--receipt-key-id", "cbp-flags-1", "--workers", "3")
    started = json.loads(serving.wait_for(r'"event": "started"').string)
    assert started["workers"] == 3 and started["tls"] is True
    assert receipt_key.is_file()  # generated where the flag said, not in the data folder
    signer = load_document_signer(pki.dir("gateway-mx") / "document-signing.pem")
    with PartnerClient(signer, "MX", target=f"127.0.0.1:{serving.port}", tls_dir=pki.dir("gateway-mx")) as mx:
        receipt = mx.transmit(certificate()).receipt  # signed by a key only the flag's trust store holds
    assert receipt.outcome.name == "ACCEPTED" and receipt.signing_key_id == "cbp-flags-1"
    assert serving.stop() == 0


def test_start_and_shutdown_lines_and_alembic_in_the_service_format(tmp_path, serve):
    serving = serve("--insecure", "--port", "0")
    port = serving.port
    serving.wait_for(r'"event": "started"')
    assert serving.stop() == 0
    entries = json_lines(serving.lines)
    assert len(entries) == len([line for line in serving.lines if not line.startswith("ecert ")])  # all JSON
    events = [e for e in entries if e["logger"] == "ecert.serve"]
    assert [e["event"] for e in events] == ["started", "stopping", "stopped"]
    assert events[0]["address"] == f"127.0.0.1:{port}" and events[0]["database"].startswith("sqlite:///")
    assert events[1]["signal"] == "SIGTERM"
    migrations = [e["msg"] for e in entries if e["logger"].startswith("alembic")]
    assert any(m.startswith("Running upgrade  -> 0001") for m in migrations)
    assert not any("setup plugin" in m for m in migrations)


def test_db_upgrade_reports_each_migration_in_the_service_format(tmp_path):
    done = ecert("db", "upgrade", cwd=tmp_path, env=clean_env(ECERT_LOG_FORMAT="text"))
    assert done.code == 0 and done.stdout.strip() == "schema up to date: sqlite"
    assert re.search(r"INFO alembic\.runtime\.migration Running upgrade 0001 -> 0002", done.stderr), done.stderr


def test_log_level_warning_leaves_out_the_info_lines(tmp_path, serve):
    serving = serve("--insecure", "--port", "0", "--log-level", "warning")
    serving.port  # noqa: B018 - waits until it serves
    assert serving.stop() == 0
    levels = {e["level"] for e in json_lines(serving.lines)}
    assert levels <= {"WARNING", "ERROR"} and levels, serving.lines  # the key warnings of a fresh data folder


def test_the_configuration_file_under_the_environment_under_the_flags(tmp_path, serve):
    config = tmp_path / "ecert.toml"
    config.write_text('log_format = "text"\nport = 0\nworkers = 5\n')

    from_file = serve("--insecure", "--config", str(config))
    from_file.wait_for(r"INFO ecert\.serve ecert started")  # text, as the file says
    assert from_file.stop() == 0

    env = clean_env(ECERT_LOG_FORMAT="json", ECERT_CONFIG=str(config))
    from_env = serve("--insecure", env=env)
    started = json.loads(from_env.wait_for(r'"event": "started"').string)  # the variable wins over the file
    assert started["workers"] == 5 and started["config_file"] == str(config)
    assert from_env.stop() == 0

    from_flag = serve("--insecure", "--log-format", "text", "--workers", "2", env=env)
    line = from_flag.wait_for(r"ecert started").string  # the flag wins over the variable
    assert not line.startswith("{")
    assert from_flag.stop() == 0


def test_a_configuration_file_with_an_unknown_key_stops_the_start(tmp_path):
    config = tmp_path / "ecert.toml"
    config.write_text('wokers = 4\n')
    done = ecert("serve", "--insecure", "--config", str(config), cwd=tmp_path)
    assert done.code == 2 and len(done.error_lines) == 1 and "unknown key 'wokers'" in done.stderr, done.stderr
    config.write_text('workers = "four"\n')
    done = ecert("serve", "--insecure", "--config", str(config), cwd=tmp_path)
    assert done.code == 2 and len(done.error_lines) == 1 and "workers" in done.stderr, done.stderr


@pytest.mark.parametrize("flag, value, said", [
    ("--batch-cutoff", "8:30 PM", "batch cutoff '8:30 PM': a time of day HH:MM"),
    ("--critical-share", "1.5", "critical share 1.5: above 0 and at most 1"),
    ("--critical-share", "ninety", "critical share 'ninety': a decimal fraction"),
    ("--allotments", "sometimes", "allotments 'sometimes': auto, on or off"),
    ("--allotment-share", "0.5", "allotment share 0.5: above 0 and at most 0.1"),
    ("--allotment-share", "a bit", "allotment share 'a bit': a decimal fraction"),
])
def test_a_bad_cutoff_critical_share_or_allotment_setting_stops_the_start_with_one_line(tmp_path, flag, value, said):
    done = ecert("serve", "--insecure", flag, value, cwd=tmp_path)
    assert done.code == 2 and len(done.error_lines) == 1 and said in done.stderr, done.stderr


def non_loopback_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address to check the binding from")
    return str(address)


def reachable(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(3)
        return s.connect_ex((address, port)) == 0


@pytest.mark.parametrize("metrics_host, exposed", [(None, False), ("0.0.0.0", True)])
def test_the_operator_endpoint_is_on_loopback_unless_told(tmp_path, serve, metrics_host, exposed):
    address = non_loopback_address()
    serving = serve("--insecure", "--allow-insecure-remote", "--host", "0.0.0.0", "--port", "0", "--metrics-port", "0",
                    *(["--metrics-host", metrics_host] if metrics_host else []))
    port = serving.port
    metrics = int(serving.wait_for(r"metrics on http://[\d.]+:(\d+)/").group(1))
    assert reachable(address, port)  # gRPC listens on every interface, as asked
    assert reachable("127.0.0.1", metrics)
    assert reachable(address, metrics) is exposed
    assert serving.stop() == 0
