"""A real server with its operator HTTP endpoint on a free port."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from server.app import RunningServer, create_server


@pytest.fixture
def database_url() -> str:
    """Metrics, logs and the page read the same way on any engine: SQLite only here."""
    return ""


@pytest.fixture
def server(settings, clock) -> Iterator[RunningServer]:  # type: ignore[no-untyped-def]
    settings.metrics_port = "0"
    running = create_server(settings, address="127.0.0.1:0", clock=clock)
    yield running
    running.stop(0)


def http_get(running: RunningServer, path: str) -> tuple[int, str, str]:
    assert running.http is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{running.http.port}{path}", timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode()


def http_json(running: RunningServer, path: str) -> tuple[int, Any]:
    status, _, body = http_get(running, path)
    return status, json.loads(body)
