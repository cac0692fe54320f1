"""Docs that run: every fenced `sh` and `python` block of README.md runs as written, in order, in one
fresh folder, as a reader with the virtual environment active would run them (`ecert` and `python` are
the ones this test runs under), or is listed in EXEMPT with the reason it cannot run here.

One mechanical change, and only one: the documented default ports 50051 (the service) and 50052 (the
relay) are replaced by free ones, in the blocks' text and in the variables the commands read when no
port is written (ECERT_PORT, ECERT_TARGET, ECERT_GATEWAY_RELAY), so that the test never collides with
a service that already runs on this machine. The folder gets the checkout's `.ci/` (a block calls
`.ci/pg-cluster` as from the repository root). What a block starts in the background (`&`) runs until
the end of the test, for the blocks after it, and is then stopped with its process group.
"""
from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.operators.conftest import ROOT, clean_env

README = ROOT / "README.md"

# The first line of each block that does not run here, and why.
EXEMPT = {
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/ecert demo":
        "the quick start: CI runs exactly these two commands on a fresh clone (.ci/run makes the virtual "
        "environment, installs, and runs the README's test command); the demo is tests/e2e/test_demo.py; "
        "running the test suite from inside the test suite would recurse",
    "python3 -m venv .venv && .venv/bin/pip install --constraint constraints.txt -e '.[test]'":
        "installs from the package index into the checkout (minutes) and rewrites constraints.txt; "
        "tests/operators/test_deploy.py checks that the file exists and the image installs with it",
    ".venv/bin/pip install -e '.[postgres]'":
        "production: needs the PostgreSQL server db.internal and serves until stopped",
    ".venv/bin/python -m bench            # full run: 5 s per measurement, growth to 1 million rows, 50,000-claim opening":
        "the benchmarks run for minutes (the full run about 6); CI runs `python -m bench --quick` after the tests "
        "(.ci/run), and tests/bench/ covers the bench's parts",
}
RUN_TIMEOUT_S = 240  # one block; the longest (the partner side) takes about a minute, 30 s of it `steady`


@dataclass
class Block:
    language: str
    line: int  # of the opening fence
    text: str

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0].strip() if self.text.strip() else ""


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```([a-z]*)\n(.*?)^```$", text, flags=re.S | re.M):
        language = match.group(1)
        if language in ("sh", "python"):
            blocks.append(Block(language, text.count("\n", 0, match.start()) + 1, match.group(2)))
    return blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_exemption_names_a_block_that_exists():
    firsts = {block.first_line for block in readme_blocks()}
    assert set(EXEMPT) <= firsts, set(EXEMPT) - firsts
    assert len(readme_blocks()) - len(EXEMPT) >= 8  # the blocks that run are most of them


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_readme_block_runs_as_written(tmp_path):
    service, relay = free_port(), free_port()
    env = clean_env(
        PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        ECERT_PORT=str(service), ECERT_TARGET=f"127.0.0.1:{service}", ECERT_GATEWAY_RELAY=f"127.0.0.1:{relay}",
    )
    (tmp_path / ".ci").symlink_to(ROOT / ".ci", target_is_directory=True)
    started: list[subprocess.Popen] = []  # type: ignore[type-arg]
    ran = 0
    try:
        for block in readme_blocks():
            if block.first_line in EXEMPT:
                continue
            text = block.text.replace("50051", str(service)).replace("50052", str(relay))
            log = tmp_path / f"block-{block.line}.log"
            if block.language == "sh":
                command = ["bash", "-e", "-o", "pipefail", "-c", text]
            else:
                script = tmp_path / f"block-{block.line}.py"
                script.write_text(text, encoding="utf-8")
                command = [sys.executable, str(script)]
            with log.open("w") as output:
                # Its own session: whatever it leaves running in the background is stopped at the end. Output to a
                # file, not a pipe, which a background process would hold open after the block ends.
                process = subprocess.Popen(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                                           stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
                started.append(process)
                try:
                    code = process.wait(timeout=RUN_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    code = None
            printed = log.read_text(encoding="utf-8", errors="replace")
            assert code == 0, f"README.md line {block.line} ({block.first_line!r}) exited {code}:\n{printed[-4000:]}"
            ran += 1
    finally:
        for process in started:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    assert ran == len(readme_blocks()) - len(EXEMPT)
