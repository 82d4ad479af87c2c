/* A decode step's transformer layers in one call: one new token per row, every layer's weights in the
 * tiles layouts. Python's path (model.TransformerBlock over the same kernels, one call each) costs ~10
 * module and operator dispatches a layer, which on a 135M model take longer than the layer's matmuls;
 * here the same kernels run back to back, in the same order, on buffers allocated once a step.
 *
 * Per layer: x = rms_norm(h) -> qkv = x Wqkv^T -> RoPE on q and k -> attention (new K/V written to the
 * pool) -> h += out Wo^T -> x = rms_norm(h) -> gate|up = x W13^T -> h += (silu(gate) * up) W2^T, every
 * intermediate rounded to bf16 where PyTorch's path rounds it; q|k|v and gate|up are one matmul each, or
 * parts when their formats differ.
 */
#include <stdlib.h>
#include "kernels.h"
#include "simd.h"

enum { INT4 = 0, INT4SYM = 1, INT8 = 2 };

typedef struct {  /* a PackedLinear in the tiles layout: y (M, n) = x (M, k) @ W^T */
    int64_t format, n, k;
    const uint8_t *weight;
    const void *scales;
} linear_t;

typedef struct {
    const uint16_t *attention_norm, *ffn_norm;  /* (dim,) bf16 */
    linear_t qkv[3], wo, w13[2], w2;  /* q|k|v fused, or q, k, v; gate|up fused (gate rows first), or gate, up */
    int64_t qkv_parts, w13_parts;  /* 1 when fused */
} layer_t;

typedef struct {
    int64_t n_layers, dim, hidden, heads, kv_heads, head_dim, neox, window;
    float eps;
    const layer_t *layers;
} decoder_t;

static void linear(const linear_t *l, const uint16_t *x, int64_t M, uint16_t *y, int8_t *xq, float *dx, int32_t *sx,
                   int threads) {
    if (l->format == INT4)
        int4_matmul(x, M, l->k, l->weight, (const uint32_t *)l->scales, l->n, y, xq, dx, sx, threads);
    else if (l->format == INT4SYM)
        int4sym_matmul(x, M, l->k, l->weight, (const uint16_t *)l->scales, l->n, y, xq, dx, sx, threads);
    else
        int8_matmul(x, M, l->k, l->weight, (const uint16_t *)l->scales, l->n, y, xq, dx, sx, threads);
}

/* y (M, sum of the parts' n) = x @ the parts' rows stacked: each part into tmp, then its columns of y (one
 * part: straight into y). Unfused parts are weights of different formats (a Q4_K_M file's Q6_K attn_v). */
static void linear_parts(const linear_t *parts, int64_t count, const uint16_t *x, int64_t M, uint16_t *y,
                         uint16_t *tmp, int8_t *xq, float *dx, int32_t *sx, int threads) {
    if (count == 1) {
        linear(parts, x, M, y, xq, dx, sx, threads);
        return;
    }
    int64_t width = 0, at = 0;
    for (int64_t p = 0; p < count; p++)
        width += parts[p].n;
    for (int64_t p = 0; p < count; at += parts[p].n, p++) {
        linear(parts + p, x, M, tmp, xq, dx, sx, threads);
        for (int64_t r = 0; r < M; r++)
            memcpy(y + r * width + at, tmp + r * parts[p].n, sizeof(uint16_t) * parts[p].n);
    }
}

static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* h (rows, dim) += y (rows, dim), each sum rounded to bf16 (as a bf16 tensor add). */
static void add_into(uint16_t *h, const uint16_t *y, int64_t values) {
    for (int64_t i = 0; i < values; i += 16) {
        const __m512 a = bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(h + i)));
        const __m512 b = bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(y + i)));
        _mm256_storeu_si256((__m256i *)(h + i), f32x16_to_bf16(_mm512_add_ps(a, b)));
    }
}

/* act (rows, hidden) = silu(gate) * up from gate_up (rows, 2 hidden): silu rounded to bf16, then the product
 * (PyTorch's F.silu(gate) * up on bf16 tensors). */
static void silu_mul(const uint16_t *gate_up, int64_t rows, int64_t hidden, uint16_t *act) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < hidden; i += 16) {
            const __m512 g = bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(gate_up + r * 2 * hidden + i)));
            const __m512 u = bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(gate_up + r * 2 * hidden + hidden + i)));
            float gs[16] __attribute__((aligned(64)));
            _mm512_store_ps(gs, g);
            for (int j = 0; j < 16; j++)
                gs[j] = gs[j] / (1.0f + expf(-gs[j]));
            const __m512 s = bf16x16_to_f32(f32x16_to_bf16(_mm512_load_ps(gs)));
            _mm256_storeu_si256((__m256i *)(act + r * hidden + i), f32x16_to_bf16(_mm512_mul_ps(s, u)));
        }
}

/* h: (rows, dim) bf16, the step's embeddings in, the last layer's output out. cos_sin: (rows, head_dim / 2, 2)
 * float32 of each row's position; k_pool, v_pool: (n_layers, slots, kv_heads, head_dim) bf16; tables, lengths:
 * block_size as paged_decode_attention_bf16's (no shared prefix). */
void decode_layers(const decoder_t *m, uint16_t *h, int64_t rows, const float *cos_sin, uint16_t *k_pool,
                   uint16_t *v_pool, int64_t pool_slots, const int32_t *tables, int64_t table_width,
                   const int32_t *lengths, int64_t block_size, int threads) {
    const int64_t width = (m->heads + 2 * m->kv_heads) * m->head_dim, attended = m->heads * m->head_dim;
    const int64_t widest_in = max64(max64(m->dim, attended), m->hidden);  /* the matmuls' inputs */
    const int64_t layer_values = pool_slots * m->kv_heads * m->head_dim;
    uint16_t *x = malloc(sizeof(uint16_t) * rows * m->dim), *y = malloc(sizeof(uint16_t) * rows * m->dim);
    uint16_t *qkv = malloc(sizeof(uint16_t) * rows * width), *out = malloc(sizeof(uint16_t) * rows * attended);
    uint16_t *gate_up = malloc(sizeof(uint16_t) * rows * 2 * m->hidden), *act = malloc(sizeof(uint16_t) * rows * m->hidden);
    int8_t *xq = malloc(rows * widest_in);
    float *dx = malloc(sizeof(float) * rows * (widest_in / 32));
    int32_t *sx = malloc(sizeof(int32_t) * rows * (widest_in / 32));
    const int64_t widest_part = max64(width, 2 * m->hidden);
    uint16_t *tmp = malloc(sizeof(uint16_t) * rows * widest_part);  /* one unfused part's output */
    for (int64_t i = 0; i < m->n_layers; i++) {
        const layer_t *l = m->layers + i;
        rms_norm_bf16(h, rows, m->dim, l->attention_norm, m->eps, x);
        linear_parts(l->qkv, l->qkv_parts, x, rows, qkv, tmp, xq, dx, sx, threads);
        rope_bf16(qkv, rows, width, m->heads + m->kv_heads, m->head_dim, cos_sin, (int)m->neox);
        paged_decode_attention_bf16(qkv, rows, width, m->heads, m->kv_heads, m->head_dim, k_pool + i * layer_values,
                                    v_pool + i * layer_values, tables, table_width, lengths, block_size, m->window,
                                    0, NULL, NULL, out, threads);
        linear(&l->wo, out, rows, y, xq, dx, sx, threads);
        add_into(h, y, rows * m->dim);
        rms_norm_bf16(h, rows, m->dim, l->ffn_norm, m->eps, x);
        linear_parts(l->w13, l->w13_parts, x, rows, gate_up, tmp, xq, dx, sx, threads);
        silu_mul(gate_up, rows, m->hidden, act);
        linear(&l->w2, act, rows, y, xq, dx, sx, threads);
        add_into(h, y, rows * m->dim);
    }
    free(x); free(y); free(qkv); free(out); free(gate_up); free(act); free(xq); free(dx); free(sx); free(tmp);
}
