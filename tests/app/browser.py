"""What the browser tests share: the web app as a subprocess on a free loopback port (default model,
a given REASON_HOME) and a page of Debian's headless Chromium driven by Playwright."""
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.bench.serve import free_port, stop_child

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = os.environ.get("REASON_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]


def wait_until_serving(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    """Poll the app until it answers HTTP (model loading takes a few seconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)  # polling interval, not synchronisation
    pytest.fail(f"the app did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


@contextmanager
def serving_app(home: Path):
    """`python -m app.ui` on the default model with REASON_HOME=home; yields its URL, stops it after."""
    port, log = free_port(), home / "server.log"
    env = {**os.environ, "REASON_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("REASON_MODEL", None)  # the default model
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "app.ui", "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log)
        yield url
    finally:
        stop_child(process, 20)


@contextmanager
def browser_page(url: str, **page_options):
    """A 1400×1000 Chromium page at url (skips the test where Playwright or Chromium is missing)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, **page_options)
        page.set_default_timeout(30_000)
        page.goto(url)
        yield page
        browser.close()
