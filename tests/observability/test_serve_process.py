"""`ecert serve` as a process: JSON logs on stderr naming the caller's request id, metrics on its flag's port."""
from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request

from client.sdk import NotFound, OperatorClient, current_request_id


class Lines:
    """The process's stderr, read by a thread so that waiting for a line can time out."""

    def __init__(self, process: subprocess.Popen):  # type: ignore[type-arg]
        self.seen: list[str] = []
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.queue.put(line) for line in process.stderr], daemon=True).start()  # type: ignore[union-attr]

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no {pattern!r} in:\n{''.join(self.seen)}")


def test_serve_logs_json_with_request_ids_and_serves_metrics(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECERT_")}
    env.update(ECERT_DATA_DIR=str(tmp_path / "data"))
    process = subprocess.Popen(
        [sys.executable, "-m", "client.cli", "serve", "--insecure", "--port", "0", "--metrics-port", "0", "--create-receipt-key"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    lines = Lines(process)
    try:
        port = int(lines.wait_for(r"serving on 127\.0\.0\.1:(\d+)").group(1))
        metrics_port = int(lines.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))

        token = current_request_id.set("cli-trace-0001")  # what a relay does when it forwards a call
        try:
            with OperatorClient(target=f"127.0.0.1:{port}", insecure=True) as client:
                try:
                    client.get_certificate("MX", "MX26-00000001")
                except NotFound as error:
                    assert error.request_id == "cli-trace-0001" and error.reason == "CERTIFICATE_NOT_FOUND"
                else:
                    raise AssertionError("expected NOT_FOUND")
        finally:
            current_request_id.reset(token)

        entry = json.loads(lines.wait_for(r'"request_id": "cli-trace-0001"').string)
        assert entry["logger"] == "ecert.rpc" and entry["code"] == "NOT_FOUND" and entry["reason"] == "CERTIFICATE_NOT_FOUND"
        assert entry["method"] == "/ecert.v1.TransmissionService/GetCertificate"

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            body = response.read().decode()
        assert re.search(r'ecert_grpc_server_handled_total\{grpc_code="NOT_FOUND",grpc_method="GetCertificate",'
                         r'grpc_service="ecert.v1.TransmissionService"\} 1\.0', body), body
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0
