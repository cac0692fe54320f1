"""deploy/: the container image, the compose file and the systemd unit, as far as this machine can check them
without a container engine. Every command they run is parsed by the real `ecert` command's own options;
every ECERT_* variable they set is one that exists; the health check they declare answers against a
real `ecert serve`; and the compose topology (PostgreSQL, two replicas, the relay) started as processes
with the compose file's own commands and variables serves, answers its health checks and carries a
transmission end to end."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import inspect
import json
import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys
from typing import Any

import pytest
import typer

from client.commands import health, pki, relay, serve
from client.commands.serve import FLAG_ONLY
from client.pki import init_pki
from client.sdk.channel import ConnectionSettings
from gateway_sim.processes import Party, gateway_command, start
from server.config import CONFIG_VARIABLE, Settings
from tests.operators import compose_file
from tests.factories import small_levels
from tests.operators.conftest import ROOT, clean_env

DEPLOY = ROOT / "deploy"
COMPOSE = compose_file.load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
IMAGE = "ecert:latest"
# Where the image and the compose file put things; the process tests put them in a temporary folder.
PKI_MOUNT, DATA_DIR = "/pki", "/var/lib/ecert"


def commands() -> dict[str, Any]:
    """The real commands, on an app of their own (importing client.cli would silence gRPC for the session)."""
    app = typer.Typer()
    serve.register(app)
    relay.register(app)
    health.register(app)
    app.add_typer(pki.app, name="pki")
    group = typer.main.get_command(app)  # a (vendored) click group: parsing is click's own
    found = dict(group.commands)  # type: ignore[attr-defined]
    pki_group = found.pop("pki")
    found.update({f"pki {name}": command for name, command in pki_group.commands.items()})
    return found


COMMANDS = commands()
SERVICE_VARIABLES = {f"ECERT_{f.name.upper()}" for f in dataclasses.fields(Settings) if f.name not in FLAG_ONLY} | {CONFIG_VARIABLE}
CLIENT_VARIABLES = set(re.findall(r'"(ECERT_[A-Z_]+)"', inspect.getsource(ConnectionSettings.from_env)))


def parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """`ecert ARGS` as the real command parses it: unknown flags, missing values and bad types raise."""
    name = " ".join(argv[:2]) if argv[0] == "pki" else argv[0]
    command = COMMANDS[name]
    rest = argv[len(name.split()):]
    context = command.make_context(name, list(rest), resilient_parsing=False)
    return name, context.params


def variables_of(command: str) -> set[str]:
    own = {v for p in COMMANDS[command].params for v in ([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])}
    return own | (SERVICE_VARIABLES if command == "serve" else set()) | CLIENT_VARIABLES


def health_argv(test: list[str]) -> list[str]:
    assert test[:2] == ["CMD", "ecert"], test  # exec form, the image's own ecert
    return test[2:]


def ecert_services() -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in SERVICES.items() if spec.get("image") == IMAGE}


# -- the files, checked against the commands -----------------------------------------------------


def test_compose_services_run_real_commands_with_real_flags_and_variables(monkeypatch):
    for name, spec in ecert_services().items():
        assert spec["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        command, _ = parse(spec["command"])
        environment = spec.get("environment", {})
        unknown = {k for k in environment if k.startswith("ECERT_")} - variables_of(command)
        assert not unknown, f"{name}: {unknown} is no variable of `ecert {command}`"
        if command == "serve":  # the values are ones the service accepts (as `ecert serve` loads them)
            for key in [k for k in os.environ if k.startswith("ECERT_")]:
                monkeypatch.delenv(key)
            for key, value in environment.items():
                monkeypatch.setenv(key, value)
            Settings.load().validate()
        if "healthcheck" in spec and spec["healthcheck"].get("disable") != "true":
            assert parse(health_argv(spec["healthcheck"]["test"]))[0] == "health", name


def test_compose_topology_postgres_two_replicas_and_the_relay():
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    password = SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD:?"), "no password in the file: it comes from deploy/.env"
    replicas = {n: s for n, s in ecert_services().items() if s["command"][0] == "serve"}
    assert len(replicas) == 2
    urls = {s["environment"]["ECERT_DATABASE_URL"] for s in replicas.values()}
    assert len(urls) == 1 and "@postgres:5432/" in urls.pop()  # one database, on the postgres service
    for name, spec in replicas.items():
        assert spec["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert spec["depends_on"]["pki"] == {"condition": "service_completed_successfully"}
        env = spec["environment"]
        target = parse(health_argv(spec["healthcheck"]["test"]))[1]
        assert target["target"] == f"127.0.0.1:{env['ECERT_PORT']}" and str(target["tls_dir"]) == env["ECERT_TLS_DIR"]
        assert spec["ports"][0].startswith("127.0.0.1:")  # published on the host's loopback only
    _, relay_options = parse(SERVICES["relay"]["command"])
    host, _, port = relay_options["service"].partition(":")
    assert all(host in s["networks"]["default"]["aliases"] and s["environment"]["ECERT_PORT"] == port for s in replicas.values())
    _, pki_options = parse(SERVICES["pki"]["command"])
    assert pki_options["if_missing"] and host in pki_options["server_name"]  # the relay can verify the replicas' name
    relay_health = parse(health_argv(SERVICES["relay"]["healthcheck"]["test"]))[1]
    assert relay_health["target"] == f"127.0.0.1:{relay_options['port']}"


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_is_multi_stage_non_root_with_a_grpc_health_check():
    steps = dockerfile()
    stages = [args for op, args in steps if op == "FROM"]
    assert len(stages) >= 2 and stages[0].endswith("AS build") and stages[-1].endswith("AS runtime")
    runtime = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    users = [args for op, args in runtime if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the runtime stage runs as an unprivileged user"
    assert any(op == "COPY" and args.startswith("--from=build ") for op, args in runtime)
    assert not any(op == "COPY" and not args.startswith("--from=") for op, args in runtime), "runtime gets only the build's output"
    for op, args in steps:  # everything the build copies exists in the repository
        if op == "COPY" and not args.startswith("--from="):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(args for op, args in runtime if op == "ENV")))
    unknown = {k for k in env if k.startswith("ECERT_")} - SERVICE_VARIABLES - CLIENT_VARIABLES
    assert not unknown, unknown
    (check,) = [args for op, args in runtime if op == "HEALTHCHECK"]
    argv = json.loads(check[check.index("CMD ") + 4:])
    assert argv[0] == "ecert" and parse(argv[1:])[0] == "health"
    assert json.loads(dict(runtime)["ENTRYPOINT"]) == ["ecert"] and parse(json.loads(dict(runtime)["CMD"]))[0] == "serve"
    # The health check's client settings point at the service's own port and TLS folder.
    assert env["ECERT_TARGET"] == f"127.0.0.1:{env['ECERT_PORT']}" and env["ECERT_CLIENT_TLS_DIR"] == env["ECERT_TLS_DIR"]


def test_systemd_unit_runs_ecert_serve_as_its_own_user():
    unit = (DEPLOY / "ecert.service").read_text(encoding="utf-8")
    entries = re.findall(r"^(\w+)=(.*)$", unit, re.MULTILINE)
    values: dict[str, list[str]] = {}
    for key, value in entries:
        values.setdefault(key, []).append(value)
    assert values["User"] == ["ecert"] and values["Type"] == ["simple"]
    argv = shlex.split(values["ExecStart"][0])
    assert argv[0].endswith("/bin/ecert") and parse(argv[1:])[0] == "serve"
    names = {value.split("=", 1)[0] for value in values["Environment"]}
    assert names <= SERVICE_VARIABLES, names - SERVICE_VARIABLES
    assert values["RestartPreventExitStatus"] == ["2"]  # unusable configuration does not heal by restarting


def test_parse_refuses_what_the_commands_would_refuse():
    """The checks above mean something only if a wrong flag fails them."""
    for argv, error in ((["serve", "--receipt-keys", "x"], "NoSuchOption"), (["relay", "--port", "many"], "BadParameter"),
                        (["health", "--tls", "x"], "NoSuchOption"), (["pki", "init"], "MissingParameter")):
        with pytest.raises(Exception) as raised:
            parse(argv)
        assert type(raised.value).__name__ == error, argv
    assert "ECERT_RECEIPT_KEY_FILE" not in variables_of("serve") and "ECERT_TARGET" in variables_of("health")


# -- the health check and the topology, as real processes ------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def localized(value: str, pki_dir: pathlib.Path, data_dir: pathlib.Path) -> str:
    return value.replace(PKI_MOUNT + "/", f"{pki_dir}/").replace(DATA_DIR, str(data_dir))


def run_health(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "client.cli", *argv], capture_output=True, text=True, timeout=30,
                          env=clean_env(**(env or {})), cwd=ROOT, stdin=subprocess.DEVNULL)


def start_replica(name: str, pki_dir: pathlib.Path, root: pathlib.Path, database_url: str) -> Party:
    spec = SERVICES[name]
    env = {k: localized(v, pki_dir, root / name) for k, v in spec["environment"].items()}
    env.update(ECERT_DATABASE_URL=database_url, ECERT_HOST="127.0.0.1", ECERT_PORT="0")
    return start(name, spec["command"], root / name / "serve.log", env=clean_env(**env), timeout=60)


def health_check_of(name: str, pki_dir: pathlib.Path, port: int) -> list[str]:
    argv = [localized(a, pki_dir, pathlib.Path(DATA_DIR)) for a in health_argv(SERVICES[name]["healthcheck"]["test"])]
    target = argv.index("--target") + 1
    argv[target] = f"127.0.0.1:{port}"
    return argv


@pytest.fixture
def dev_pki(tmp_path: pathlib.Path) -> pathlib.Path:
    _, options = parse(SERVICES["pki"]["command"])
    init_pki(tmp_path / "pki", server_names=tuple(options["server_name"]))
    return tmp_path / "pki"


def test_the_declared_health_check_against_a_real_service(tmp_path, dev_pki):
    service = start_replica("ecert-a", dev_pki, tmp_path, "")  # SQLite in its data folder
    try:
        argv = health_check_of("ecert-a", dev_pki, service.port)
        ok = run_health(argv)
        assert ok.returncode == 0 and ok.stdout.strip() == f"127.0.0.1:{service.port}: SERVING", ok.stdout + ok.stderr
        # The image's own HEALTHCHECK: no flags, the client settings from its ENV.
        runtime_env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for op, a in dockerfile() if op == "ENV")))
        image_env = {"ECERT_TARGET": f"127.0.0.1:{service.port}",
                     "ECERT_CLIENT_TLS_DIR": localized(runtime_env["ECERT_CLIENT_TLS_DIR"], dev_pki, tmp_path)}
        assert run_health(["health", "--timeout", "3"], image_env).returncode == 0

        unknown = run_health([*argv, "--service", "ecert.v1.NoSuchService"])
        assert unknown.returncode == 1 and "SERVICE_UNKNOWN" in unknown.stdout
        assert run_health([*argv, "--service", "ecert.v1.MatchService"]).returncode == 0
        stranger = tmp_path / "other-pki"
        init_pki(stranger)  # a certificate from another authority: the handshake fails
        refused = run_health([*argv[:argv.index("--tls-dir")], "--tls-dir", str(stranger / "admin"), "--timeout", "3"])
        assert refused.returncode == 3, refused.stderr
        bare = run_health(["health", "--target", f"127.0.0.1:{service.port}"])
        assert bare.returncode == 2 and "no TLS material" in bare.stderr
    finally:
        service.stop()
    gone = run_health([*argv[:-1], "2"])
    assert gone.returncode == 3 and "UNAVAILABLE" in gone.stderr


@pytest.mark.postgres
def test_the_compose_topology_as_processes_serves_and_carries_a_transmission(tmp_path, dev_pki, postgres_server):
    database = postgres_server.create()  # empty: the replicas race to migrate it, as in compose
    url = postgres_server.url_of(database)
    started: list[Party] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(start_replica, name, dev_pki, tmp_path, url) for name in ("ecert-a", "ecert-b")]
            replicas = [f.result() for f in futures]
        started += replicas
        for name, replica in zip(("ecert-a", "ecert-b"), replicas):
            done = run_health(health_check_of(name, dev_pki, replica.port))
            assert done.returncode == 0 and "SERVING" in done.stdout, done.stderr

        argv = [localized(a, dev_pki, tmp_path / "relay") for a in SERVICES["relay"]["command"]]
        _, options = parse(argv)
        # The replicas' shared name resolves to a replica here; the certificates name localhost too.
        argv[argv.index("--service") + 1] = f"localhost:{replicas[1].port}"
        argv[argv.index("--port") + 1] = str(free_port())
        argv[argv.index("--host") + 1] = "127.0.0.1"
        (tmp_path / "relay").mkdir()
        relay_party = start("relay", argv, tmp_path / "relay" / "relay.log", env=clean_env())
        started.append(relay_party)
        done = run_health(health_check_of("relay", dev_pki, relay_party.port))
        assert done.returncode == 0 and "SERVING" in done.stdout, done.stderr

        gateway = gateway_command(dev_pki, tmp_path / "gateway" / "register.db", relay_party.address, "burst", "--count", "3", wait=30)
        done = subprocess.run(gateway, capture_output=True, text=True, timeout=60, env=clean_env())
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert done.returncode == 0 and (summary["receipts"], summary["bad_receipts"], summary["receipt_signatures"]) == (3, 0, "verified")
        # Stored once in the one database both replicas serve: the other replica reads it back.
        listed = run_health(["certificate", "list", "MX", "--json", "--target", f"127.0.0.1:{replicas[0].port}",
                             "--tls-dir", str(dev_pki / "customs")])
        assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 3, listed.stderr
    finally:
        for party in reversed(started):
            party.stop()
        postgres_server.drop(database)


def test_the_compose_pki_job_makes_a_pki_once_naming_the_compose_hosts(tmp_path):
    """`pki` runs at every `docker compose up`: the first run makes the PKI, later ones keep it."""
    from cryptography import x509

    argv = [a.replace(PKI_MOUNT, str(tmp_path / "pki")) for a in SERVICES["pki"]["command"]]
    first = run_health(argv)
    assert first.returncode == 0, first.stderr
    cert = (tmp_path / "pki" / "service" / "cert.pem").read_bytes()
    names = x509.load_pem_x509_certificate(cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"ecert", "relay", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    again = run_health(argv)
    assert again.returncode == 0 and "kept" in again.stdout
    assert (tmp_path / "pki" / "service" / "cert.pem").read_bytes() == cert  # nothing rotated behind the replicas' back
    without = run_health([a for a in argv if a != "--if-missing"])
    assert without.returncode == 2 and "already holds a PKI" in without.stderr


def test_the_documented_sqlite_backup_runs_against_a_running_service(tmp_path, serve):
    """docs/operations.md's SQLite block, as written, in the folder of a service that keeps running."""
    docs = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = docs[docs.index("**SQLite**"):docs.index("## Key rotation")]
    block = re.search(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M).group(1)  # type: ignore[union-attr]
    service = serve("--insecure", "--port", "0")
    port = service.port  # migrated and serving
    env = clean_env(PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert port
    # Something written while the service runs, to carry over: a new version of the TPL levels.
    levels = tmp_path / "levels.json"
    levels.write_text(small_levels("backup-test", {"9823.53.01": "1000"}), encoding="utf-8")
    live_url = "sqlite:///" + str(tmp_path / "ecert-data" / "ecert.db")
    loaded = run_health(["reference", "load", str(levels), "--database-url", live_url])
    assert loaded.returncode == 0, loaded.stderr
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    def versions(url: str) -> list[dict[str, Any]]:
        listed = run_health(["reference", "list", "--json", "--database-url", url])
        assert listed.returncode == 0, listed.stderr
        return json.loads(listed.stdout)

    copied = versions("sqlite:///" + str(tmp_path / "ecert-backup.db"))
    assert "backup-test" in [v["version"] for v in copied] and copied == versions(live_url)
    assert service.process.poll() is None  # the service ran on throughout
    # The check in the block means something: a copy missing the schema fails it.
    (tmp_path / "empty.db").touch()
    broken = subprocess.run(["bash", "-c", block.splitlines()[-1].replace("ecert-backup.db", "empty.db")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert broken.returncode == 2, broken.stdout + broken.stderr
