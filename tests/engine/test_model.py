"""The model's own invariants, on a tiny random-weight Transformer."""
import pytest
import torch

from engine.model import ModelArgs, Transformer


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = Transformer(ModelArgs.tiny())
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def full_forward(model, tokens):
    positions = torch.arange(tokens.shape[1]).expand_as(tokens)
    return model(tokens, positions)


@torch.inference_mode()
def test_cached_decoding_equals_full_forward(tiny_model):
    tokens = torch.randint(0, 256, (2, 24))
    expected = full_forward(tiny_model, tokens)
    tiny_model.setup_cache(batch=2, max_seq_len=32)
    try:
        prefix = tiny_model(tokens[:, :8], torch.arange(8).expand(2, -1))
        steps = [tiny_model(tokens[:, t:t + 1], torch.full((2, 1), t)) for t in range(8, 24)]
    finally:
        tiny_model.clear_cache()
    cached = torch.cat([prefix, *steps], dim=1)
    torch.testing.assert_close(cached, expected, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_right_padded_batch_matches_single_rows(tiny_model):
    short, long = torch.randint(0, 256, (1, 5)), torch.randint(0, 256, (1, 9))
    batch = torch.zeros(2, 9, dtype=torch.long)
    batch[0, :5], batch[1] = short[0], long[0]
    tiny_model.setup_cache(batch=2, max_seq_len=16)
    try:
        logits = tiny_model(batch, torch.arange(9).expand(2, -1))
    finally:
        tiny_model.clear_cache()
    torch.testing.assert_close(logits[0, :5], full_forward(tiny_model, short)[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits[1], full_forward(tiny_model, long)[0], atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_bf16_compute_stays_close_to_fp32(tiny_model):
    tokens = torch.randint(0, 256, (1, 16))
    reference = full_forward(tiny_model, tokens)
    bf16 = Transformer(tiny_model.args).eval()
    bf16.load_state_dict(tiny_model.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    out = full_forward(bf16, tokens)
    assert out.dtype == torch.float32
    assert (out.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.9
    assert (out - reference).norm() / reference.norm() < 0.05


def test_gqa_requires_divisible_heads():
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        ModelArgs.tiny(n_heads=4, n_kv_heads=3)
