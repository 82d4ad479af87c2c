"""`reason serve` as a real process: SIGTERM stops it within seconds even while it generates (issue 17),
and a blank --api-key is refused rather than letting an empty bearer token in."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from app.cli import cli

from .browser import free_port  # one free-port helper for the tests that start servers

ROOT = Path(__file__).resolve().parents[2]



def wait_until_serving(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"reason serve exited with {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)  # polling the port: the process has no other way to say it is up
    raise AssertionError("reason serve did not start")


@pytest.mark.parametrize("key", ["", "   "])
def test_a_blank_api_key_is_refused(tmp_path, monkeypatch, tiny_model, key):
    monkeypatch.setenv("REASON_HOME", str(tmp_path))
    result = CliRunner().invoke(cli, ["serve", "--api-key", key, "--model", tiny_model])
    assert result.exit_code == 2 and "blank" in result.output and "Traceback" not in result.output


def test_sigterm_stops_a_busy_server_within_seconds(tmp_path, tiny_model):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "REASON_HOME": str(tmp_path)}
    command = [sys.executable, "-c", "from app.cli import main; main()", "serve", "--model", tiny_model,
               "--device", "cpu", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(url, process)
        body = {"model": "tiny", "prompt": "The quick brown fox", "max_tokens": 3000, "logit_bias": {"2": -100}}
        clients = [threading.Thread(target=_ask, args=(url, {**body, "stream": i % 2 == 0}), daemon=True)
                   for i in range(4)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health").json()["running"] < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{url}/health").json()["running"] == 4  # busy: four long generations
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        assert time.monotonic() - start < 6 and process.returncode in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _ask(url: str, body: dict) -> None:
    try:
        httpx.post(f"{url}/v1/completions", json=body, timeout=60)
    except httpx.TransportError:  # the server stopped under us: what this test does
        pass
