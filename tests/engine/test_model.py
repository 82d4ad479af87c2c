"""The model's own invariants, on a tiny random-weight Transformer."""
import pytest
import torch

from engine.model import ModelArgs, Transformer

from .forward import full_forward, incremental_forward, padded_forward


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = Transformer(ModelArgs.tiny())
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return model.eval()


@torch.inference_mode()
def test_cached_decoding_equals_full_forward(tiny_model):
    tokens = torch.randint(0, 256, (2, 24))
    expected = full_forward(tiny_model, tokens)
    cached = incremental_forward(tiny_model, tokens, prefix=8)
    torch.testing.assert_close(cached, expected, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_right_padded_batch_matches_single_rows(tiny_model):
    short, long = torch.randint(0, 256, (1, 5)), torch.randint(0, 256, (1, 9))
    logits = padded_forward(tiny_model, [short[0].tolist(), long[0].tolist()])
    torch.testing.assert_close(logits[0], full_forward(tiny_model, short)[0], atol=1e-4, rtol=1e-4)
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
