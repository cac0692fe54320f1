"""Just enough of the W3C WebDriver protocol to drive Debian's chromium through its chromedriver.

No Selenium: a few JSON requests to a chromedriver process on a loopback port (which never tries
to download drivers or browsers, something this machine could not do anyway).
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1200,800",
]


def find_browser() -> tuple[str | None, str | None]:
    return shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    def __init__(self, chromium: str, chromedriver: str, profile: pathlib.Path):
        self.port = _free_port()
        self.driver = subprocess.Popen([chromedriver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       env={**os.environ, "HOME": str(profile)})
        self.session = ""
        deadline = time.monotonic() + 30
        while True:
            try:
                self._request("GET", "/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.1)
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium, "args": [*CHROME_FLAGS, f"--user-data-dir={profile}"]}}
        created = self._request("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.session = created["sessionId"]

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"webdriver {method} {path}: {error.read().decode(errors='replace')}") from None

    def get(self, url: str) -> None:
        self._request("POST", f"/session/{self.session}/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Run JavaScript in the page (a function body; `arguments` holds args) and return its value."""
        return self._request("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, path: pathlib.Path) -> None:
        import base64

        path.write_bytes(base64.b64decode(self._request("GET", f"/session/{self.session}/screenshot")))

    def wait_for(self, script: str, timeout: float = 20, *args: Any) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {script}")
            time.sleep(0.2)

    def close(self) -> None:
        try:
            if self.session:
                self._request("DELETE", f"/session/{self.session}")
        finally:
            self.driver.terminate()
            try:
                self.driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
