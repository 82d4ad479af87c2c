"""GET /metrics: Prometheus text with vLLM's names where they overlap, counts that follow the requests."""
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import load_model
from engine.serving.server import create_app
from tests.live_server import serve_in_thread

from .tiny_gguf import TinyShape, write_tiny_llama


@pytest.fixture(scope="module")
def engine(tmp_path_factory, spm_vocab):
    path = write_tiny_llama(tmp_path_factory.mktemp("metrics") / "tiny.gguf", spm_vocab, "Q8_0",
                            shape=TinyShape(context=512))
    model = load_model(path, device="cpu", dtype="float32")
    yield model
    model.close()


@pytest.fixture(scope="module")
def base_url(engine):
    with serve_in_thread(create_app(engine, api_key="k", model_name="tiny", max_body_mb=0.01)) as url:
        yield url


def scrape(base_url) -> dict[str, float]:
    """Every sample as 'name{label="value",...}' -> value."""
    reply = httpx.get(f"{base_url}/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_the_engine_gauges_are_there_before_any_request(base_url, engine):
    samples = scrape(base_url)
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert samples[f'{name}{{model_name="tiny"}}'] == 0
    assert samples['vllm:prefix_cache_queries_total{model_name="tiny"}'] >= 0
    assert "process_resident_memory_bytes{}" in samples


def test_requests_move_the_counters_and_histograms(base_url, engine):
    before = scrape(base_url)
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="k", max_retries=0)
    no_eos = {str(engine.tokenizer.eos_id): -100}
    reply = client.completions.create(model="tiny", prompt="The quick brown fox", max_tokens=5, n=2, logit_bias=no_eos)
    list(client.completions.create(model="tiny", prompt="hi", max_tokens=3, stream=True, logit_bias=no_eos))
    after = scrape(base_url)
    grew = lambda name: after.get(name, 0) - before.get(name, 0)  # noqa: E731
    tiny = '{model_name="tiny"}'
    assert grew(f"vllm:prompt_tokens_total{tiny}") == reply.usage.prompt_tokens + len(engine.tokenizer.encode("hi"))
    assert grew(f"vllm:generation_tokens_total{tiny}") == 10 + 3
    assert grew(f"vllm:time_to_first_token_seconds_count{tiny}") == 2  # one per request
    assert grew(f"vllm:inter_token_latency_seconds_count{tiny}") == 2 * 4 + 2  # per choice, after its first token
    assert grew(f"vllm:e2e_request_latency_seconds_count{tiny}") == 2
    assert grew('vllm:request_success_total{finished_reason="length",model_name="tiny"}') == 3  # two choices, one stream
    assert grew(f"vllm:prefix_cache_queries_total{tiny}") > 0


def test_refusals_are_counted(base_url, engine):
    before = scrape(base_url)
    too_large = httpx.post(f"{base_url}/v1/completions", headers={"Authorization": "Bearer k"},
                           json={"model": "tiny", "prompt": "x" * 20_000})
    stats = engine.stats
    engine.stats = lambda: {**stats(), "waiting": engine.loop.max_waiting}
    try:
        busy = httpx.post(f"{base_url}/v1/completions", headers={"Authorization": "Bearer k"},
                          json={"model": "tiny", "prompt": "hi", "max_tokens": 1})
    finally:
        del engine.stats
    after = scrape(base_url)
    assert too_large.status_code == 413 and busy.status_code == 429
    for status in ("413", "429"):
        name = f'reason:requests_rejected_total{{status="{status}"}}'
        assert after[name] - before.get(name, 0) == 1


def test_metrics_can_be_turned_off(engine):
    with serve_in_thread(create_app(engine, metrics=False)) as url:
        assert httpx.get(f"{url}/metrics").status_code == 404
        assert httpx.get(f"{url}/health").status_code == 200
