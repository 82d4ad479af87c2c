"""The web app's process serves the engine's Prometheus metrics at GET /metrics (unless turned off)."""

import httpx
import pytest

from app.settings import Settings
from app.ui.server import launch

from .browser import free_port  # one free-port helper for the tests that start servers


@pytest.mark.parametrize("metrics", [True, False])
def test_the_web_app_serves_metrics(tmp_path, monkeypatch, tiny_model, metrics):
    monkeypatch.setenv("REASON_HOME", str(tmp_path))
    port = free_port()
    app = launch(Settings.from_env().with_overrides(device="cpu"), port=port, model_path=tiny_model, block=False,
                 metrics=metrics)
    try:
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics")
        page = httpx.get(f"http://127.0.0.1:{port}/")
    finally:
        app.close()
        app.reason_state.engine.close()
    assert page.status_code == 200  # Gradio's own routes are untouched
    if metrics:
        assert reply.status_code == 200 and 'vllm:num_requests_running{model_name="tiny"} 0.0' in reply.text
        assert "vllm:kv_cache_usage_perc" in reply.text and "process_resident_memory_bytes" in reply.text
    else:
        assert "vllm:" not in reply.text
