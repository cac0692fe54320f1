"""The README's SDK examples, one per role, run as written against a mutual-TLS server and the dev PKI."""
from __future__ import annotations

import pathlib
import re

import pytest

from tests.tls_fixtures import pki, secure_server  # noqa: F401 (fixtures)

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def sdk_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python SDK"):text.index("\n## ", text.index("## Python SDK") + 3)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_there_is_an_example_per_role():
    joined = "\n".join(sdk_examples())
    for role in ("PartnerClient", "RelayClient", "CustomsClient", "ImporterClient", "OperatorClient"):
        assert f"with {role}(" in joined, role


@pytest.mark.timeout(120)  # an example that waits for ever must fail, not hang the suite
def test_readme_examples_run(pki, secure_server, tmp_path, monkeypatch, capsys):  # noqa: F811
    (tmp_path / "pki").symlink_to(pki.root, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}  # every example defines what it uses (the relay's seals the envelope it forwards)
    for example in sdk_examples():
        exec(compile(example.replace("127.0.0.1:50051", f"127.0.0.1:{secure_server.port}"), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "Outcome.ACCEPTED" in printed and "QUANTITY_NOT_POSITIVE" in printed
    assert "ClaimDecision.PREFERENTIAL" in printed and "TPL 1" in printed
    assert "1200 0 1200 ['B76-0000001-5']" in printed  # the importer sees the customs example's claim, reversed
    assert (tmp_path / "receipt.json").is_file()
    assert "Outcome.ACCEPTED True" in printed  # the relay's forward, receipted under the partner's message id
    assert namespace["result"].receipt.message_id == namespace["envelope"].message_id
