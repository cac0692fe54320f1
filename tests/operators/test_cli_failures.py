"""One clear line per failure, with the documented exit status (README, "Command line"): the real `ecert`
command as a subprocess, against real files, ports, servers and databases."""
from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from tests.operators.conftest import clean_env, ecert
from tests.tls_fixtures import pki, secure_server  # noqa: F401 (fixtures)

EXIT_REFUSED, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 1, 2, 3


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_audit_verify_outside_a_data_folder_says_where_and_creates_nothing(tmp_path):
    done = ecert("audit", "verify", cwd=tmp_path)
    assert done.code == EXIT_BAD_INPUT
    assert len(done.error_lines) == 1 and "no database at" in done.stderr and "ECERT_DATA_DIR" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []  # no empty ecert-data/ecert.db left behind


def test_audit_verify_in_a_data_folder_reads_the_chain(tmp_path):
    assert ecert("db", "upgrade", cwd=tmp_path).code == 0  # the data folder's database, as `ecert serve` makes it
    done = ecert("audit", "verify", cwd=tmp_path)
    assert done.code == 0, done.stderr
    assert done.stdout.startswith("audit log intact:")


def test_audit_verify_on_a_database_without_the_schema_says_so(tmp_path):
    (tmp_path / "ecert-data").mkdir()
    (tmp_path / "ecert-data" / "ecert.db").touch()
    done = ecert("audit", "verify", cwd=tmp_path)
    assert done.code == EXIT_BAD_INPUT
    assert len(done.error_lines) == 1 and "no eCERT schema" in done.stderr and "ecert db upgrade" in done.stderr


def test_an_unreachable_database_is_one_line_for_a_command_and_for_the_service(tmp_path):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/ecert"
    audit = ecert("audit", "verify", "--database-url", url, cwd=tmp_path)
    assert audit.code == EXIT_UNREACHABLE
    assert audit.error_lines == [audit.error_lines[0]] and "cannot use the database" in audit.stderr, audit.stderr

    serve = ecert("serve", "--insecure", "--create-receipt-key", "--port", "0", cwd=tmp_path, env=clean_env(ECERT_DATABASE_URL=url))
    assert serve.code == EXIT_UNREACHABLE
    assert len(serve.error_lines) == 1 and "Connection refused" in serve.stderr, serve.stderr


def test_a_client_without_tls_material_is_told_what_to_give(tmp_path, secure_server):  # noqa: F811
    done = ecert("quota", "status", "--target", f"127.0.0.1:{secure_server.port}", cwd=tmp_path)
    assert done.code == EXIT_BAD_INPUT
    assert len(done.error_lines) == 1 and "--tls-dir" in done.stderr and "--insecure" in done.stderr, done.stderr


def test_a_failed_handshake_is_one_line_without_grpc_core_logs(tmp_path, pki, secure_server):  # noqa: F811
    other = tmp_path / "other-pki"
    assert ecert("pki", "init", str(other), cwd=tmp_path).code == 0  # a CA the service does not trust
    done = ecert("quota", "status", "--target", f"127.0.0.1:{secure_server.port}", "--tls-dir", str(other / "admin"),
                 "--timeout", "5", cwd=tmp_path)
    assert done.code == EXIT_UNREACHABLE
    assert len(done.error_lines) == 1 and done.stderr.startswith("error: UNAVAILABLE"), done.stderr

    # The same command with the right material answers (the guard above is about the failure only).
    ok = ecert("quota", "status", "--json", "--target", f"127.0.0.1:{secure_server.port}",
               "--tls-dir", str(pki.dir("admin")), cwd=tmp_path)
    assert ok.code == 0 and ok.stderr == "", ok.stderr
    assert {q["tpl_number"] for q in json.loads(ok.stdout)} >= {"9823.53.01"}


def test_watch_without_a_terminal_prints_a_line_per_event(tmp_path, pki, secure_server):  # noqa: F811
    done = ecert("quota", "status", "--watch", "--max-events", "2", "--tpl", "9823.53.01", "--tpl", "9823.53.06",
                 "--target", f"127.0.0.1:{secure_server.port}", "--tls-dir", str(pki.dir("admin")), cwd=tmp_path)
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    assert all(" snapshot TPL " in line and " open" in line for line in lines), lines
    assert any("(9823.53.06, " in line and " KG " in line for line in lines), lines


def test_the_operator_endpoint_answers_its_root_with_an_index(tmp_path, serve):
    serving = serve("--insecure", "--port", "0", "--metrics-port", "0")
    metrics = int(serving.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/").group(1))
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/html")
        page = response.read().decode()
    for path in ("/metrics", "/healthz", "/quota", "/quota.json"):
        assert f'href="{path}"' in page
    with pytest.raises(urllib.error.HTTPError) as missing:  # other paths are still not found
        urllib.request.urlopen(f"http://127.0.0.1:{metrics}/nothing-here", timeout=10)
    assert missing.value.code == 404
    assert serving.stop() == 0


def test_a_service_port_already_taken_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = ecert("serve", "--insecure", "--create-receipt-key", "--port", str(taken.getsockname()[1]), cwd=tmp_path)
    assert done.code == EXIT_BAD_INPUT
    # The service's own log lines (JSON: migrations, keys) and one error line; nothing in gRPC core's format.
    plain = [line for line in done.error_lines if not line.startswith("{")]
    assert plain == [done.error_lines[-1]] and plain[0].startswith("error: cannot listen on 127.0.0.1:"), done.stderr
    assert all(json.loads(line) for line in done.error_lines[:-1])


def test_unusable_settings_are_one_line_naming_the_setting(tmp_path):
    bad_env = ecert("serve", "--insecure", cwd=tmp_path, env=clean_env(ECERT_WORKERS="many"))
    assert bad_env.code == EXIT_BAD_INPUT and bad_env.error_lines == ["error: ECERT_WORKERS='many': not a whole number"]
    bad_level = ecert("serve", "--insecure", "--log-level", "loud", cwd=tmp_path)
    assert bad_level.code == EXIT_BAD_INPUT and len(bad_level.error_lines) == 1 and "log level" in bad_level.stderr
    assert not (tmp_path / "ecert-data").exists()


def test_an_unexpected_error_is_one_line_and_its_traceback_is_there_when_asked(tmp_path):
    (tmp_path / "a-file").write_text("not a folder\n")
    target = str(tmp_path / "a-file" / "pki")  # a folder inside a file: pki init has no message of its own for this
    done = ecert("pki", "init", target, cwd=tmp_path)
    assert done.code == 4
    assert len(done.error_lines) == 1 and done.stderr.startswith("error: unexpected NotADirectoryError"), done.stderr
    assert "ECERT_TRACEBACK=1" in done.stderr

    traced = ecert("pki", "init", target, cwd=tmp_path, env=clean_env(ECERT_TRACEBACK="1"))
    assert traced.code == 1 and "Traceback (most recent call last)" in traced.stderr
