/* Decode attention over the paged KV pool on AVX-512: one new token per batch row.
 *
 * PyTorch's path for a decode step (paged_attention.py) writes the new K/V with index_copy_, gathers
 * each row's keys with index_select, builds a mask and calls the flash kernel, twice when rows share
 * a prefix: ~15 operator calls per layer, which at one token cost more than the attention itself.
 * Here one call per layer writes the new K/V at their slots and attends each (row, KV head) pair's
 * query heads over the row's keys, read in place through its block table.
 *
 * Each pair is one OpenMP work item; keys are taken 16 at a time with a running max and sum
 * (online softmax), in float32, and each item sums in key order: a row's result depends only on its
 * own keys, not on its neighbours in the batch or on the thread count.
 */
#include "simd.h"

#define KEYS 16  /* keys per softmax step: one vector of scores */
#define MAX_GROUPS 16  /* query heads per KV head */
#define MAX_GROUP_VALUES 4096  /* query heads per KV head x head_dim, held in float32 on the stack */
#define MAX_HEAD_DIM 256

static inline const uint16_t *slot_of(const uint16_t *pool, const int32_t *table, int64_t block_size,
                                      int64_t position, int64_t kv_heads, int64_t head, int64_t head_dim) {
    const int64_t slot = (int64_t)table[position / block_size] * block_size + position % block_size;
    return pool + (slot * kv_heads + head) * head_dim;
}

/* Lane j = the sum of v[j]'s lanes, for 16 vectors at once (a transposing tree: ~45 instructions instead of
 * 16 horizontal reductions of ~8), always in the same order. */
static inline __m512 sum_lanes16(const __m512 v[16]) {
    __m512 pairs[8], quads[4];
    for (int k = 0; k < 8; k++)  /* per 128-bit lane: [v2k, v2k+1, v2k, v2k+1] partial sums */
        pairs[k] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]), _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]));
    for (int k = 0; k < 4; k++) {  /* per 128-bit lane: [v4k .. v4k+3] partial sums */
        const __m512d a = _mm512_castps_pd(pairs[2 * k]), b = _mm512_castps_pd(pairs[2 * k + 1]);
        quads[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    const __m512 low = _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], 0x88),
                                     _mm512_shuffle_f32x4(quads[0], quads[1], 0xDD));
    const __m512 high = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2], quads[3], 0x88),
                                      _mm512_shuffle_f32x4(quads[2], quads[3], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(low, high, 0x88), _mm512_shuffle_f32x4(low, high, 0xDD));
}

/* Query heads [head * groups, (head + 1) * groups) of one row over keys [first, length) of KV head `head`,
 * continuing from `prior` (the heads' attention over keys before `first`, and its log-sum-exp per head) when
 * given. Each step converts 16 keys and values to float32 once for all the group's queries; a query's
 * 16 scores come from one transposing reduction; its output stays in registers over the values (inlined
 * with a constant head_dim for the common sizes, so the loops over it unroll). */
static inline __attribute__((always_inline)) void
attend_body(const uint16_t *q, const uint16_t *k_pool, const uint16_t *v_pool, const int32_t *table,
            int64_t block_size, int64_t first, int64_t length, int64_t kv_heads, int64_t head, int64_t groups,
            const uint16_t *prior, const float *prior_lse, uint16_t *out, const int64_t head_dim) {
    const int64_t vectors = head_dim / 16;
    float qf[MAX_GROUP_VALUES] __attribute__((aligned(64))), acc[MAX_GROUP_VALUES] __attribute__((aligned(64)));
    float kf[KEYS * MAX_HEAD_DIM] __attribute__((aligned(64))), vf[KEYS * MAX_HEAD_DIM] __attribute__((aligned(64)));
    float running_max[MAX_GROUPS], running_sum[MAX_GROUPS];
    const float scale = 1.0f / sqrtf((float)head_dim);
    for (int64_t i = 0; i < groups * head_dim; i += 16) {
        _mm512_store_ps(qf + i, _mm512_mul_ps(bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(q + i))),
                                              _mm512_set1_ps(scale)));
        _mm512_store_ps(acc + i, prior ? bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(prior + i)))
                                       : _mm512_setzero_ps());  /* weighted by exp(lse - running max) = 1 */
    }
    for (int64_t g = 0; g < groups; g++) {
        running_max[g] = prior ? prior_lse[g] : -INFINITY;
        running_sum[g] = prior ? 1.0f : 0.0f;
    }
    for (int64_t c = first; c < length; c += KEYS) {
        const int64_t n = length - c < KEYS ? length - c : KEYS;
        for (int64_t j = 0, block = c / block_size, offset = c % block_size; j < KEYS; j++) {  /* one division */
            if (j >= n) {  /* past the last key: zeros, masked out below */
                memset(kf + j * head_dim, 0, head_dim * sizeof(float));
                memset(vf + j * head_dim, 0, head_dim * sizeof(float));
                continue;
            }
            const int64_t at = (((int64_t)table[block] * block_size + offset) * kv_heads + head) * head_dim;
            for (int64_t d = 0; d < vectors; d++) {
                _mm512_store_ps(kf + j * head_dim + 16 * d,
                                bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(k_pool + at + 16 * d))));
                _mm512_store_ps(vf + j * head_dim + 16 * d,
                                bf16x16_to_f32(_mm256_loadu_si256((const __m256i *)(v_pool + at + 16 * d))));
            }
            if (++offset == block_size) {
                offset = 0;
                block++;
            }
        }
        const __mmask16 valid = (__mmask16)((1u << n) - 1);
        for (int64_t g = 0; g < groups; g++) {
            __m512 dots[KEYS];
            for (int64_t j = 0; j < KEYS; j++) {
                dots[j] = _mm512_setzero_ps();
                for (int64_t d = 0; d < vectors; d++)
                    dots[j] = _mm512_fmadd_ps(_mm512_load_ps(qf + g * head_dim + 16 * d),
                                              _mm512_load_ps(kf + j * head_dim + 16 * d), dots[j]);
            }
            const __m512 s = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), valid, sum_lanes16(dots));
            const float top = fmaxf(running_max[g], _mm512_reduce_max_ps(s));
            const float rescale = running_max[g] == -INFINITY ? 0.0f : expf(running_max[g] - top);
            const __m512 p = _mm512_maskz_mov_ps(valid, exp_nonpositive(_mm512_sub_ps(s, _mm512_set1_ps(top))));
            running_sum[g] = running_sum[g] * rescale + _mm512_reduce_add_ps(p);
            running_max[g] = top;
            float weights[KEYS] __attribute__((aligned(64)));
            _mm512_store_ps(weights, p);
            __m512 o[MAX_HEAD_DIM / 16];
            for (int64_t d = 0; d < vectors; d++)
                o[d] = _mm512_mul_ps(_mm512_load_ps(acc + g * head_dim + 16 * d), _mm512_set1_ps(rescale));
            for (int64_t j = 0; j < n; j++)
                for (int64_t d = 0; d < vectors; d++)
                    o[d] = _mm512_fmadd_ps(_mm512_set1_ps(weights[j]), _mm512_load_ps(vf + j * head_dim + 16 * d), o[d]);
            for (int64_t d = 0; d < vectors; d++)
                _mm512_store_ps(acc + g * head_dim + 16 * d, o[d]);
        }
    }
    for (int64_t g = 0; g < groups; g++) {
        const __m512 inverse = _mm512_set1_ps(1.0f / running_sum[g]);
        for (int64_t d = 0; d < vectors; d++)
            _mm256_storeu_si256((__m256i *)(out + g * head_dim + 16 * d),
                                f32x16_to_bf16(_mm512_mul_ps(_mm512_load_ps(acc + g * head_dim + 16 * d), inverse)));
    }
}

typedef void (*attend_fn)(const uint16_t *q, const uint16_t *k_pool, const uint16_t *v_pool, const int32_t *table,
                          int64_t block_size, int64_t first, int64_t length, int64_t kv_heads, int64_t head,
                          int64_t groups, const uint16_t *prior, const float *prior_lse, uint16_t *out, int64_t head_dim);

#define ATTEND_WITH_HEAD_DIM(D)                                                                                    \
static void attend_##D(const uint16_t *q, const uint16_t *k_pool, const uint16_t *v_pool, const int32_t *table,    \
                       int64_t block_size, int64_t first, int64_t length, int64_t kv_heads, int64_t head,         \
                       int64_t groups, const uint16_t *prior, const float *prior_lse, uint16_t *out, int64_t d) { \
    (void)d;                                                                                                       \
    attend_body(q, k_pool, v_pool, table, block_size, first, length, kv_heads, head, groups, prior, prior_lse,     \
                out, D);                                                                                           \
}
ATTEND_WITH_HEAD_DIM(64)
ATTEND_WITH_HEAD_DIM(128)

static void attend_any(const uint16_t *q, const uint16_t *k_pool, const uint16_t *v_pool, const int32_t *table,
                       int64_t block_size, int64_t first, int64_t length, int64_t kv_heads, int64_t head,
                       int64_t groups, const uint16_t *prior, const float *prior_lse, uint16_t *out, int64_t d) {
    attend_body(q, k_pool, v_pool, table, block_size, first, length, kv_heads, head, groups, prior, prior_lse, out, d);
}

/* qkv: (rows, row_stride) bf16, each row's q heads, then its new k and v heads (heads + 2 kv_heads of
 * head_dim values); k_pool, v_pool: this layer's (slots, kv_heads, head_dim) bf16; tables: (rows,
 * table_width) int32 block tables; lengths: (rows,) keys of each row, the new token included (it sits at
 * position length - 1); window: a query sees at most this many keys, 0 all. out: (rows, heads * head_dim).
 * first_key > 0: keys before it (a prefix every row shares) were attended by the caller, prior (kv_heads,
 * rows, groups, head_dim) bf16 and prior_lse (kv_heads, rows, groups) float32 hold the result, which
 * this continues (no window then). head_dim: a multiple of 16; heads / kv_heads <= MAX_GROUPS and times
 * head_dim <= MAX_GROUP_VALUES (the caller checks). */
void paged_decode_attention_bf16(const uint16_t *qkv, int64_t rows, int64_t row_stride, int64_t heads,
                                 int64_t kv_heads, int64_t head_dim, uint16_t *k_pool, uint16_t *v_pool,
                                 const int32_t *tables, int64_t table_width, const int32_t *lengths,
                                 int64_t block_size, int64_t window, int64_t first_key, const uint16_t *prior,
                                 const float *prior_lse, uint16_t *out, int threads) {
    const int64_t groups = heads / kv_heads, kv_values = kv_heads * head_dim;
    const attend_fn attend = head_dim == 64 ? attend_64 : head_dim == 128 ? attend_128 : attend_any;
    for (int64_t r = 0; r < rows; r++) {  /* the new K/V first: every query reads its own */
        const int64_t position = lengths[r] - 1, width = kv_values * (int64_t)sizeof(uint16_t);
        const int32_t *table = tables + r * table_width;
        memcpy((void *)slot_of(k_pool, table, block_size, position, kv_heads, 0, head_dim),
               qkv + r * row_stride + heads * head_dim, width);
        memcpy((void *)slot_of(v_pool, table, block_size, position, kv_heads, 0, head_dim),
               qkv + r * row_stride + heads * head_dim + kv_values, width);
    }
    #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t item = 0; item < rows * kv_heads; item++) {
        const int64_t r = item / kv_heads, head = item % kv_heads, length = lengths[r];
        const int64_t first = first_key > 0 ? first_key : window > 0 && length > window ? length - window : 0;
        const int64_t at = (head * rows + r) * groups;  /* this item's queries in prior's layout */
        attend(qkv + r * row_stride + head * groups * head_dim, k_pool, v_pool, tables + r * table_width,
               block_size, first, length, kv_heads, head, groups, prior ? prior + at * head_dim : NULL,
               prior ? prior_lse + at : NULL, out + r * heads * head_dim + head * groups * head_dim, head_dim);
    }
}
