"""A decode step's layers in one native call (native_layers.py, kernels/cpu_decode.c) against the layer-by-layer
path over the same kernels, which stays the reference: the same logits and pool writes, step after step."""
import pytest
import torch

from engine import load_model
from engine.kernels import cpu_matmul
from engine.model_runner import forward_rows
from engine.step_plan import RowPlan

native = pytest.mark.skipif(not cpu_matmul.available(), reason="needs AVX-512 VNNI and a C compiler")


def decode_both_ways(model, pool, rows: list[list[int]], steps: int):
    """Prefill `rows`, then decode `steps` tokens (each row's greedy token) through the one call and, on a copy of
    the pool, layer by layer: (one-call logits, layer-by-layer logits, pools equal after every step)."""
    tables = []
    for i, ids in enumerate(rows):
        tables.append(pool.allocate(4))
        forward_rows(model, pool, [RowPlan(i, ids, 0, tables[-1])])
    lengths = [len(ids) for ids in rows]
    next_ids = [ids[-1] for ids in rows]
    ours, reference, pools_equal = [], [], []
    for _ in range(steps):
        plans = [RowPlan(i, [t], n, table) for i, (t, n, table) in enumerate(zip(next_ids, lengths, tables))]
        k, v = pool.k.clone(), pool.v.clone()
        model.layers_in_one_call = False
        reference.append(forward_rows(model, pool, plans))
        k_ref, v_ref = pool.k.clone(), pool.v.clone()
        pool.k.copy_(k)
        pool.v.copy_(v)
        model.layers_in_one_call = True
        ours.append(forward_rows(model, pool, plans))
        pools_equal.append(torch.equal(pool.k, k_ref) and torch.equal(pool.v, v_ref))
        next_ids = ours[-1].argmax(-1).tolist()
        lengths = [n + 1 for n in lengths]
    return torch.stack(ours), torch.stack(reference), pools_equal


def assert_one_call_decodes_as_layer_by_layer(path, rows: list[list[int]], steps: int, unfused: bool = False):
    engine_ = load_model(path, device="cpu", kernels="native")
    model = engine_.model
    try:
        assert any(layer.attention.wqkv is None for layer in model.layers) == unfused
        ours, reference, pools_equal = decode_both_ways(model, engine_.pool, rows, steps)
        assert model._native_layers is not None  # the one call ran
        assert all(pools_equal)
        # the same kernels in the same order: equal but for silu's float exp (PyTorch's vs the C library's)
        assert ((ours - reference).norm() / reference.norm()).item() <= 1e-3
        assert torch.equal(ours.argmax(-1), reference.argmax(-1))
    finally:
        engine_.close()


@native
@pytest.mark.parametrize("weight_type", ["Q4_0", "Q4_1", "Q8_0"])  # the int4sym, int4 and int8 tiles
def test_one_call_decodes_as_the_layer_by_layer_path(tiny_gguf_factory, weight_type):
    rows = [list(range(3, 12)), list(range(20, 25)), list(range(40, 71))]
    assert_one_call_decodes_as_layer_by_layer(tiny_gguf_factory(weight_type), rows, steps=6)


@native
def test_unfused_layers_of_a_q4_k_m_mix_decode_as_the_layer_by_layer_path(tmp_path):
    """llama.cpp's Q4_K_M mix keeps attn_v and ffn_down of some layers in Q6_K: their q, k, v are three matmuls of
    two formats, which the one call runs as parts."""
    from app.bench.gguf_shapes import shaped_gguf

    path = shaped_gguf("tiny", "Q4_K_M", tmp_path)
    assert_one_call_decodes_as_layer_by_layer(path, [list(range(3, 12)), list(range(30, 50))], 4, unfused=True)


@native
def test_the_default_model_greedy_text_is_the_same_either_way(default_gguf):
    from engine import SamplingParams

    engine_ = load_model(default_gguf, device="cpu", kernels="native")
    try:
        params = SamplingParams(max_tokens=48)
        ids = engine_.tokenizer.encode("The capital of France is")
        ours = [e.token_id for e in engine_.submit(ids, params) if e.token_id is not None]
        engine_.model.layers_in_one_call = False
        reference = [e.token_id for e in engine_.submit(ids, params) if e.token_id is not None]
        assert ours == reference and len(ours) == 48
    finally:
        engine_.close()


class Wrapped(torch.nn.Module):
    """A linear layer the one call does not know (the same numbers: it calls the packed layer)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@native
def test_a_model_whose_layers_do_not_all_fit_goes_layer_by_layer(tiny_gguf_factory):
    engine_ = load_model(tiny_gguf_factory("Q4_0"), device="cpu", kernels="native")
    try:
        model = engine_.model
        model.layers[1].attention.wo = Wrapped(model.layers[1].attention.wo)
        ours, reference, _ = decode_both_ways(model, engine_.pool, [list(range(3, 12))], steps=2)
        assert model._native_layers is None and torch.equal(ours, reference)
    finally:
        engine_.close()
