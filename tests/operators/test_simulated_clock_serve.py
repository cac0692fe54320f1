"""`ecert serve --simulated-clock START`: every log line says the clock is simulated, and the clock
command drives the real process (issue 13, item 8)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.processes import ROOT


def test_every_log_line_of_a_service_on_a_simulated_clock_says_so(serve):  # type: ignore[no-untyped-def]
    serving = serve("--insecure", "--port", "0", "--simulated-clock", "2027-01-04T16:59:00Z")
    port = serving.port
    advanced = subprocess.run([sys.executable, "-m", "client.cli", "clock", "advance", "2m", "--insecure", "--target", f"127.0.0.1:{port}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert advanced.returncode == 0 and advanced.stdout.startswith("2027-01-04T17:01:"), advanced.stdout + advanced.stderr
    serving.wait_for(r'"event": "started"')
    assert serving.stop() == 0
    entries = [json.loads(line) for line in serving.lines if line.startswith("{")]
    assert entries and all(entry.get("clock") == "simulated" for entry in entries), [e for e in entries if e.get("clock") != "simulated"][:3]
    assert any("SIMULATED clock" in entry["msg"] for entry in entries)
