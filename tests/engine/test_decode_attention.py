"""The native decode attention (kernels/cpu_attention.c via paged_attention.decode_attention) against float64
attention over the same paged keys, and against the flash path it replaces: the same pool writes, the same
error, the same model outputs within bf16 rounding, and a row's result independent of its neighbours."""
import pytest
import torch

from engine.kernels import cpu_matmul
from engine.paged_attention import PagedBatch, decode_attention, paged_attention

native = pytest.mark.skipif(not cpu_matmul.available(), reason="needs AVX-512 VNNI and a C compiler")
BLOCK = 16


def paged_case(heads: int, kv_heads: int, head_dim: int, keys: list[int], shared_blocks: int = 0, seed: int = 0):
    """A two-layer pool with random K/V, a block table per row (a shared prefix of `shared_blocks` first,
    then blocks of its own in random order), and each row's new q|k|v: row b has keys[b] keys, its new token
    included."""
    g = torch.Generator().manual_seed(seed)
    blocks = 4 + shared_blocks + sum(-(-n // BLOCK) for n in keys)
    k_pool = torch.randn(2, blocks * BLOCK, kv_heads, head_dim, generator=g).bfloat16()
    v_pool = torch.randn(2, blocks * BLOCK, kv_heads, head_dim, generator=g).bfloat16()
    free = (torch.randperm(blocks - 1, generator=g) + 1).tolist()  # block 0 is the pool's scratch
    shared = [free.pop() for _ in range(shared_blocks)]
    tables = [shared + [free.pop() for _ in range(-(-n // BLOCK) - shared_blocks)] for n in keys]
    qkv = torch.randn(len(keys), 1, heads + 2 * kv_heads, head_dim, generator=g).bfloat16() * 2
    return k_pool, v_pool, tables, qkv


def build(k_pool, v_pool, tables, keys, heads, kv_heads, shared_blocks=0, window=0, native_decode=True):
    return PagedBatch.build(k_pool, v_pool, tables, [n - 1 for n in keys], [1] * len(keys), shared_blocks, BLOCK,
                            torch.bfloat16, heads // kv_heads, window, native_decode=native_decode)


def float64_attention(qkv, k_pool, v_pool, tables, keys, heads, kv_heads, window=0) -> torch.Tensor:
    """Each row's query heads over its keys (the new one read from qkv), exactly: (B, heads, head_dim)."""
    B, _, _, D = qkv.shape
    groups = heads // kv_heads
    out = torch.zeros(B, heads, D, dtype=torch.float64)
    for b, n in enumerate(keys):
        positions = torch.arange(max(0, n - window) if window else 0, n)
        slots = torch.tensor(tables[b])[positions // BLOCK] * BLOCK + positions % BLOCK
        k, v = k_pool[slots].double(), v_pool[slots].double()  # (n, kv_heads, D)
        k[-1], v[-1] = qkv[b, 0, heads:heads + kv_heads].double(), qkv[b, 0, heads + kv_heads:].double()
        for h in range(heads):
            scores = k[:, h // groups] @ qkv[b, 0, h].double() / D ** 0.5
            out[b, h] = torch.softmax(scores, 0) @ v[:, h // groups]
    return out


def flash_path(qkv, k_pool, v_pool, tables, keys, heads, kv_heads, shared_blocks=0, window=0):
    batch = build(k_pool, v_pool, tables, keys, heads, kv_heads, shared_blocks, window, native_decode=False)
    Hkv = kv_heads
    q, k, v = qkv[:, :, :heads], qkv[:, :, heads:heads + Hkv], qkv[:, :, heads + Hkv:]
    return paged_attention(q, k, v, batch, 1, False)


CASES = [  # heads, kv_heads, head_dim, keys per row
    (9, 3, 64, [1, 17, 40, 100]),  # the default model's attention
    (4, 4, 128, [5, 16, 33]),  # LLaMA-2-7B's (no grouping)
    (8, 2, 128, [64, 3]),  # LLaMA-3-8B's grouping
    (6, 2, 80, [20, 47]),  # a head size without its own inlined copy
]


@native
@pytest.mark.parametrize("heads, kv_heads, head_dim, keys", CASES)
def test_decode_attention_is_attention_within_bf16_rounding_and_writes_the_pool_as_the_flash_path(
        heads, kv_heads, head_dim, keys):
    k_pool, v_pool, tables, qkv = paged_case(heads, kv_heads, head_dim, keys)
    exact = float64_attention(qkv, k_pool[1], v_pool[1], tables, keys, heads, kv_heads)
    k_flash, v_flash = k_pool.clone(), v_pool.clone()
    flash = flash_path(qkv, k_flash, v_flash, tables, keys, heads, kv_heads).view_as(exact)
    batch = build(k_pool, v_pool, tables, keys, heads, kv_heads)
    ours = decode_attention(qkv, heads, batch, 1).view_as(exact)
    assert torch.equal(k_pool, k_flash) and torch.equal(v_pool, v_flash)  # the new K/V, at the same slots
    error, flash_error = (ours.double() - exact).abs().max(), (flash.double() - exact).abs().max()
    assert error <= max(flash_error, 2 ** -8 * exact.abs().max())  # bf16 rounding of the output, no worse


@native
@pytest.mark.parametrize("window", [1, 7, 40])
def test_a_sliding_window_limits_the_keys_a_decode_query_sees(window):
    heads, kv_heads, D, keys = 9, 3, 64, [3, 30, 90]
    k_pool, v_pool, tables, qkv = paged_case(heads, kv_heads, D, keys, seed=1)
    exact = float64_attention(qkv, k_pool[1], v_pool[1], tables, keys, heads, kv_heads, window)
    ours = decode_attention(qkv, heads, build(k_pool, v_pool, tables, keys, heads, kv_heads, window=window), 1)
    assert (ours.view_as(exact).double() - exact).abs().max() <= 2 ** -8 * exact.abs().max()


@native
def test_with_a_shared_prefix_the_kernel_continues_the_prefix_result_exactly_as_one_pass_would():
    heads, kv_heads, D = 9, 3, 64
    keys = [2 * BLOCK + 1, 2 * BLOCK + 20, 3 * BLOCK + 5]
    k_pool, v_pool, tables, qkv = paged_case(heads, kv_heads, D, keys, shared_blocks=2, seed=2)
    exact = float64_attention(qkv, k_pool[1], v_pool[1], tables, keys, heads, kv_heads)
    batch = build(k_pool, v_pool, tables, keys, heads, kv_heads, shared_blocks=2)
    assert batch.decode.shared == 2 * BLOCK and batch.shared_slots is not None
    ours = decode_attention(qkv, heads, batch, 1).view_as(exact)
    flash = flash_path(qkv, k_pool.clone(), v_pool.clone(), tables, keys, heads, kv_heads, 2).view_as(exact)
    assert (ours.double() - exact).abs().max() <= max((flash.double() - exact).abs().max(), 2 ** -8 * exact.abs().max())


@native
def test_a_rows_result_does_not_depend_on_its_neighbours_or_the_thread_count():
    heads, kv_heads, D = 9, 3, 64
    keys = [50, 7, 130, 64]
    k_pool, v_pool, tables, qkv = paged_case(heads, kv_heads, D, keys, seed=3)
    together = decode_attention(qkv, heads, build(k_pool.clone(), v_pool.clone(), tables, keys, heads, kv_heads), 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for b in range(len(keys)):
            alone = decode_attention(qkv[b:b + 1], heads,
                                     build(k_pool.clone(), v_pool.clone(), tables[b:b + 1], keys[b:b + 1], heads,
                                           kv_heads), 1)
            assert torch.equal(alone[0], together[b])
    finally:
        torch.set_num_threads(threads)


def float64_decode_attention(qkv, n_heads, batch, layer):
    """decode_attention's contract computed exactly (then rounded to bf16): the model-level reference."""
    B, _, heads, D = qkv.shape
    kv_heads = (heads - n_heads) // 2
    d = batch.decode
    tables = [row.tolist() for row in d.tables]
    keys = d.keys.tolist()
    k_pool, v_pool = batch.k_pool[layer], batch.v_pool[layer]
    for b, n in enumerate(keys):  # the new K/V, where the kernel writes them
        slot = tables[b][(n - 1) // BLOCK] * BLOCK + (n - 1) % BLOCK
        k_pool[slot], v_pool[slot] = qkv[b, 0, n_heads:n_heads + kv_heads], qkv[b, 0, n_heads + kv_heads:]
    out = float64_attention(qkv, k_pool, v_pool, tables, keys, n_heads, kv_heads, d.window)
    return out.to(torch.bfloat16).view(B, 1, -1)


@native
def test_a_tiny_native_model_decodes_as_close_to_exact_attention_as_its_flash_path(tiny_gguf_factory, monkeypatch):
    """The whole model: each decode step's logits through the kernel and through the flash path, against the
    same step with float64 attention (rounded to bf16): the kernel's logits stay within 0.5% of it (they
    have matched it exactly), and closer than the flash path's, which the int8 activations of the next
    matmuls carry to ~2% of the logits."""
    import engine.model
    from engine import load_model
    from engine.model import Transformer
    from engine.model_runner import forward_rows
    from engine.step_plan import RowPlan

    engine_ = load_model(tiny_gguf_factory("Q4_0"), device="cpu", kernels="native")
    model, pool = engine_.model, engine_.pool
    try:
        assert model.native_decode
        rows = [[list(range(3, 12)), pool.allocate(2)], [list(range(20, 25)), pool.allocate(2)]]
        for i, (ids, blocks) in enumerate(rows):
            forward_rows(model, pool, [RowPlan(i, ids, 0, blocks)])
        ours_errors, flash_errors = [], []
        for step in range(6):
            plans = [RowPlan(i, [40 + step], len(ids) + step, blocks) for i, (ids, blocks) in enumerate(rows)]
            with monkeypatch.context() as patch:
                patch.setattr(Transformer, "native_decode", property(lambda self: False))
                flash = forward_rows(model, pool, plans)
            with monkeypatch.context() as patch:  # (layer by layer: the one-call path attends in C)
                patch.setattr(engine.model, "decode_attention", float64_decode_attention)
                patch.setattr(model, "layers_in_one_call", False)
                exact = forward_rows(model, pool, plans)
            ours = forward_rows(model, pool, plans)
            ours_errors.append(((ours - exact).norm() / exact.norm()).item())
            flash_errors.append(((flash - exact).norm() / exact.norm()).item())
        assert max(ours_errors) <= 0.005 and sum(ours_errors) <= sum(flash_errors)
    finally:
        engine_.close()
